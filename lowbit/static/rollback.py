"""`ModelSnapshot`: enough of a model's structure to undo a failed `quantize_static` call.

Every module's parameter, buffer and child dictionaries (the objects, not copies of their values) and its training
flag, plus the model's lowbit attributes. Quantization only ever replaces these entries (BatchNorm folding writes
new Parameter objects, layers are swapped for new modules), so putting the dictionaries back restores the model
exactly: same state_dict values, same module types.
"""

from __future__ import annotations

from torch import nn

_ATTRS = ("lowbit_static", "lowbit_summary")


class ModelSnapshot:
    def __init__(self, model: nn.Module):
        self.model = model
        self.modules = [(m, dict(m._parameters), dict(m._buffers), dict(m._modules), m.training)
                        for m in model.modules()]
        self.attrs = {a: model.__dict__[a] for a in _ATTRS if a in model.__dict__}

    def restore(self) -> None:
        """Put every module and attribute back as it was when the snapshot was taken."""
        for m, params, buffers, children, training in self.modules:
            for live, saved in ((m._parameters, params), (m._buffers, buffers), (m._modules, children)):
                live.clear()
                live.update(saved)
            m.training = training
        for a in _ATTRS:
            self.model.__dict__.pop(a, None)
        self.model.__dict__.update(self.attrs)
