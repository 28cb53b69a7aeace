"""Built-in step ``half``: fp16 weights and activations.

The model's floating-point parameters and buffers become float16, and so do
its inputs (the audit takes the input dtype from the parameters). Under the
2019 rules every parameter and every multiply then costs 16/32 (the same as
the freebie gives a 32-bit model, so with the freebie the score does not
move), while additions stay at the accumulator's 32 bits.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from micronet.manager import hookimpl
from micronet.steps import CompressionStep, StepContext


def to_half(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """Cast every floating-point parameter and buffer to float16 (in place on
    the copy the pipeline handed over) and return the model."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.float16)
    return model


HALF = CompressionStep(
    name="half",
    description="fp16 weights and activations (parameters, buffers and inputs as float16)",
    run=to_half,
)


@hookimpl
def micronet_register_steps():
    return [HALF]
