"""Report sections: (label, value) lines computed from an audit's Result."""
from micronet.plugin import ReportSection, Result


def clipped_layers(result: Result) -> list[tuple[str, str]]:
    """How many ClippedReLU layers the model has, and their share of the ops."""
    layers = [(record, cost) for record, cost in result.layers if record.op == "clipped_relu"]
    if not layers:
        return []
    ops = sum(cost.ops for _, cost in layers)
    return [("layers", str(len(layers))), ("share of MicroNet ops", f"{ops / result.score.ops:.2%}")]


def codebooks(result: Result) -> list[tuple[str, str]]:
    """Every layer that stores something beside its parameters (a codebook),
    with its bit width and what it costs in 32-bit words."""
    lines = []
    for record, cost in result.layers:
        if record.declared_storage_bits:
            lines.append((record.name, f"{record.weight_bits}-bit parameters + "
                                       f"{record.declared_storage_bits / 32:g} words declared; "
                                       f"storage {cost.storage:g} words"))
    return lines


SECTIONS = [
    ReportSection("clipped-relu", "ClippedReLU layers", clipped_layers),
    ReportSection("codebooks", "Codebooks", codebooks),
]
