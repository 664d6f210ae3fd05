"""lowbit.plugins: a method registered by a plug-in module is known to a fresh process (the CLI's choices, configs
and checkpoint headers), named by LOWBIT_PLUGINS; a plug-in that cannot be imported is named in the error."""

import os
import subprocess
import sys
import textwrap

import pytest

from lowbit import plugins

PLUGIN = textwrap.dedent('''
    """A toy plug-in: RTN at 0.9 of the range under the name "plug_rtn"."""
    from dataclasses import replace

    from lowbit.pipeline import MethodSpec, register_method
    from lowbit.quant import quantize_weight

    def quantize(w, cfg, name="weight"):
        return replace(quantize_weight(w * 0.9, replace(cfg, method="rtn"), name=name), method="plug_rtn")

    register_method(MethodSpec("plug_rtn", needs_calibration=False, quantize_weight=quantize))
''')


def _run(tmp_path, code: str, plugin: str = "toy_lowbit_plugin"):
    (tmp_path / "toy_lowbit_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "LOWBIT_PLUGINS": plugin,
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", ""), os.getcwd()])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_a_fresh_process_knows_the_plugin_method(tmp_path):
    code = textwrap.dedent(f'''
        import torch, lowbit
        from lowbit.cli import main
        model = torch.nn.Sequential(torch.nn.Linear(64, 32))
        q = lowbit.quantize(model, lowbit.QuantConfig(bits=4, block_size=32, method="plug_rtn"), min_weights=0,
                            progress=False)
        lowbit.save(q, r"{tmp_path}/q.safetensors")
        raise SystemExit(main(["convert", "--help"]))
    ''')
    proc = _run(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert "plug_rtn" in proc.stdout  # the --method choices
    info = _run(tmp_path, f"from lowbit.cli import main; raise SystemExit(main(['info', r'{tmp_path}/q.safetensors']))")
    assert info.returncode == 0 and "plug_rtn" in info.stdout, info.stderr


def test_a_plugin_that_cannot_be_imported_is_named(monkeypatch):
    monkeypatch.setenv(plugins.ENV, "no_such_lowbit_plugin")
    plugins.reset()
    try:
        with pytest.raises(ImportError, match="plug-in 'no_such_lowbit_plugin' .named by .LOWBIT_PLUGINS"):
            plugins.load_plugins()
    finally:
        monkeypatch.delenv(plugins.ENV)
        plugins.reset()
