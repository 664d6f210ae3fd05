"""Calibration data and activation capture, shared by every method that looks at a model's inputs.

Small API:
  as_calibration(source, limit=None, mask_fn=None)       # iterable / folder / "module:function" -> items
  item_mask(item, mask_fn) / rows_of(x, mask)             # real (unpadded) positions: lowbit.calib.mask
  Item                                                    # one call: model(*args, **kwargs)
  ensure_eval(model) -> bool                              # eval mode for calibration; True if it was training
  run_pass(model, cal, hooks, modules, ...)               # one pass with forward pre-hooks on chosen layers
  trace_calls(model, item, modules)                       # call order of layers and which share an input
  run_hooked(model, item, handles)                        # one no-grad call, then remove the hooks in handles
  minilm_calibration(model, limit=256)                    # the built-in MiniLM's own calibration sentences
  CalibrationError                                        # a bad item (named) or a NaN/inf activation (layer named)
"""

from .capture import CalibrationError, ensure_eval, run_hooked, run_pass, trace_calls
from .mask import item_mask, rows_of
from .minilm import minilm_calibration
from .sources import CalibrationSet, Item, as_calibration

__all__ = ["CalibrationError", "CalibrationSet", "Item", "as_calibration", "ensure_eval", "item_mask",
           "minilm_calibration", "rows_of", "run_hooked", "run_pass", "trace_calls"]
