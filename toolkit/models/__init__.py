"""Built-in models, a default plugin: ``micronet:NAME`` specs resolve here.

Every model is a plain ``nn.Module``; every factory takes keyword arguments
with defaults (``num_classes`` included) and builds nothing at import time.

============================  ==========================================  ===========
name                          architecture                                parameters
============================  ==========================================  ===========
``densenet_cifar``            kuangliu DenseNet-BC, growth 12, 10 classes   1,000,618
``resnet18_cifar``            kuangliu CIFAR ResNet-18, 10 classes         11,173,962
``wrn_28_10``                 WideResNet-28-10, 100 classes                36,536,884
``mobilenet_v2_cifar``        kuangliu MobileNetV2 for 32x32, 10 classes    2,296,922
``pyramidnet_cifar``          PyramidNet-110, alpha 48, 100 classes          1,778,556
``digits_cnn``                3-conv CNN for 8x8 digits, width 16            24,058
``wikitext103_lstm``          1-layer LSTM LM, WikiText-103 (tied, 512/2048) 159,385,047
============================  ==========================================  ===========
"""
from __future__ import annotations

from ..manager import hookimpl
from ..resolve import ModelEntry
from .densenet_cifar import densenet_cifar
from .digits_cnn import digits_cnn
from .lstm_lm import wikitext103_lstm
from .mobilenet_v2_cifar import mobilenet_v2_cifar
from .pyramidnet_cifar import pyramidnet_cifar
from .resnet_cifar import resnet18_cifar
from .wide_resnet import wrn_28_10

__all__ = ["densenet_cifar", "resnet18_cifar", "wrn_28_10", "mobilenet_v2_cifar", "pyramidnet_cifar",
           "digits_cnn", "wikitext103_lstm", "micronet_register_models"]

CIFAR_INPUT = (1, 3, 32, 32)
DIGITS_INPUT = (1, 1, 8, 8)
#: One token id (batch 1, sequence 1): the WikiText-103 track counts per token, online.
TOKEN_INPUT = (1, 1)


@hookimpl
def micronet_register_models():
    """The five built-in CIFAR models (1x3x32x32 default input) and the
    digits CNN (1x1x8x8), the WikiText-103 LSTM (1x1 token ids)."""
    return [
        ModelEntry(name="densenet_cifar", factory=densenet_cifar, input_shape=CIFAR_INPUT,
                   description="DenseNet-BC for CIFAR (kuangliu/pytorch-cifar), growth 12: 1.0M params"),
        ModelEntry(name="resnet18_cifar", factory=resnet18_cifar, input_shape=CIFAR_INPUT,
                   description="ResNet-18 for CIFAR (kuangliu/pytorch-cifar): 11.2M params"),
        ModelEntry(name="wrn_28_10", factory=wrn_28_10, input_shape=CIFAR_INPUT,
                   description="WideResNet-28-10, the MicroNet CIFAR-100 reference: 36.5M params"),
        ModelEntry(name="mobilenet_v2_cifar", factory=mobilenet_v2_cifar, input_shape=CIFAR_INPUT,
                   description="MobileNetV2 for 32x32 inputs (kuangliu/pytorch-cifar): 2.3M params"),
        ModelEntry(name="pyramidnet_cifar", factory=pyramidnet_cifar, input_shape=CIFAR_INPUT,
                   description="additive PyramidNet for CIFAR (Han et al. 2017), depth 110, alpha 48: "
                               "1.8M params"),
        ModelEntry(name="digits_cnn", factory=digits_cnn, input_shape=DIGITS_INPUT,
                   description="small CNN for the 8x8 digits dataset, the digits track's reference: 24K params"),
        ModelEntry(name="wikitext103_lstm", factory=wikitext103_lstm, input_shape=TOKEN_INPUT,
                   description="1-layer LSTM language model (Rae et al. 2018), the MicroNet WikiText-103 "
                               "reference: 159M params, 318M ops per token"),
    ]
