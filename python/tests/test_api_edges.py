"""The rough edges a new user runs into (issue 9, item 9): a closed preconditioner refuses every
call with one clear error, sample ids must be 1-D integers, every constructor option is checked
(type and range) at construction, numpy is a declared dependency, and the package keeps its
split (only fngd._handle calls into libfngd; one helper class per module kind)."""

import ast
import math
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fngd
from fngd import _handle, _lib, _options
from conftest import make_data, make_model

PKG = os.path.join(os.path.dirname(__file__), "..", "fngd")
PYPROJECT = os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")


def trained(mode="layer", name="token"):
    """A preconditioner past its first (collect) epoch, so that it holds coefficients."""
    model = make_model(name)
    pre = fngd.FNGDPreconditioner(model, num_samples=8, max_batch=8, damping=1e-2, mode=mode)
    x, y = make_data(name, 8)
    F.cross_entropy(model(x), y).backward()
    pre.step(torch.arange(8))
    pre.end_epoch()
    return model, pre, x, y


@pytest.mark.parametrize("mode", ["layer", "global"])
def test_closed_preconditioner_refuses_every_call(mode):
    model, pre, x, y = trained(mode)
    sd = pre.state_dict()
    assert not pre.closed
    pre.close()
    assert pre.closed
    pre.close()  # closing again is harmless
    calls = {
        "step()": lambda: pre.step(torch.arange(8)),
        "end_epoch()": pre.end_epoch,
        "loss_weights()": lambda: pre.loss_weights(torch.arange(8)),
        "stats()": pre.stats,
        "coefficients()": pre.coefficients,
        "gram_methods()": pre.gram_methods,
        "state_dict()": pre.state_dict,
        "load_state_dict()": lambda: pre.load_state_dict(sd),
        "remove_hooks()": pre.remove_hooks,
        "phase": lambda: pre.phase,
        "needs_loss_weights": lambda: pre.needs_loss_weights,
    }
    for what, call in calls.items():
        with pytest.raises(RuntimeError, match=re.escape(what) + ".*closed.*create a new one"):
            call()
    # The hooks are gone: the model trains as a plain model, nothing is captured or toggled.
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    assert all(not l.captures for l in pre.layers)
    assert all(p.grad is not None and p.requires_grad for p in model.parameters())


def test_close_before_the_first_step_and_on_garbage_collection():
    model = make_model("token")
    pre = fngd.FNGDPreconditioner(model, num_samples=8, max_batch=8)
    pre.close()
    with pytest.raises(RuntimeError, match="closed"):
        pre.step(torch.arange(8))  # no fresh handle at epoch 0 behind the user's back
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    other = fngd.FNGDPreconditioner(model, num_samples=8, max_batch=8)
    assert any(m._forward_hooks for m in model.modules())
    del other  # the hooks do not keep it alive: __del__ closes it and removes them
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


BAD_IDS = [
    (torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]), TypeError, "integers.*float32"),
    (torch.arange(8, dtype=torch.float64) + 0.5, TypeError, "integers"),
    ([0, 1, 2, 3, 4, 5, 6, 7.5], TypeError, "integers"),
    (np.arange(8, dtype=np.float32), TypeError, "integers"),
    (torch.ones(8, dtype=torch.bool), TypeError, "integers.*bool"),
    ([True] * 8, TypeError, "integers"),
    ([0, 1, 2, 3, 4, 5, 6, True], TypeError, "integers"),
    (torch.arange(8).reshape(8, 1), ValueError, "1-D.*\\(8, 1\\)"),
    (torch.arange(8).reshape(2, 4), ValueError, "1-D"),
    (torch.tensor(3), ValueError, "1-D"),
    (["a"] * 8, TypeError, "integers"),
]


@pytest.mark.parametrize("ids,exc,msg", BAD_IDS, ids=[f"ids{i}" for i in range(len(BAD_IDS))])
def test_non_integer_or_not_1d_ids_are_refused(ids, exc, msg):
    model = make_model("token")
    pre = fngd.FNGDPreconditioner(model, num_samples=16, max_batch=8, damping=1e-2)
    x, y = make_data("token", 8)
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(exc, match=msg):
        pre.step(ids)
    assert pre.stats()["steps_total"] == 0
    F.cross_entropy(model(x), y).backward()
    pre.step(torch.arange(8))  # still usable
    with pytest.raises(exc, match=msg):
        pre.coefficients(ids)


def test_loss_weights_refuses_bad_ids_too():
    _, pre, _, _ = trained("global")
    with pytest.raises(TypeError, match="integers"):
        pre.loss_weights(torch.arange(8, dtype=torch.float32))
    with pytest.raises(ValueError, match="1-D"):
        pre.loss_weights(torch.arange(8).reshape(4, 2))
    assert pre.loss_weights(np.arange(8, dtype=np.int16)).shape == (8,)
    assert pre.loss_weights(range(8)).shape == (8,)


BAD_OPTIONS = [
    (dict(num_samples=10.0), TypeError, "num_samples must be an int"),
    (dict(num_samples=True), TypeError, "num_samples must be an int"),
    (dict(num_samples=0), ValueError, "num_samples=0"),
    (dict(max_batch=2**40), ValueError, "max_batch.*65536"),
    (dict(max_batch="4"), TypeError, "max_batch must be an int"),
    (dict(damping=-0.1), ValueError, "damping=-0.1.*>= 0"),
    (dict(damping=math.nan), ValueError, "damping.*finite"),
    (dict(damping="1e-3"), TypeError, "damping must be a number"),
    (dict(mode=1), TypeError, "mode must be a string"),
    (dict(mode="blocks"), ValueError, "mode='blocks'"),
    (dict(recompute_every=-1), ValueError, "recompute_every"),
    (dict(recompute_every=1.5), TypeError, "recompute_every must be an int"),
    (dict(damping_kind="relative"), ValueError, "damping_kind"),
    (dict(loss_reduction=None), TypeError, "loss_reduction must be a string"),
    (dict(fallback="zero"), ValueError, "fallback"),
    (dict(gram_method="fast"), ValueError, "gram_method"),
    (dict(max_damping_retries=65), ValueError, "max_damping_retries.*0..64"),
    (dict(damping_growth=1.0), ValueError, "damping_growth.*> 1"),
    (dict(damping_growth=math.inf), ValueError, "damping_growth"),
    (dict(check_finite="yes"), TypeError, "check_finite must be True or False"),
    (dict(check_finite=1), TypeError, "check_finite must be True or False"),
    (dict(max_workspace_bytes=0), ValueError, "max_workspace_bytes"),
    (dict(max_workspace_bytes=1e9), TypeError, "max_workspace_bytes must be an int"),
    (dict(skip_weight_grad=None), TypeError, "skip_weight_grad"),
    (dict(unsupported="ignore"), ValueError, "unsupported"),
    (dict(modules="proj"), TypeError, "modules must be an iterable of module names"),
    (dict(modules=[0]), TypeError, "modules must hold module names"),
    (dict(coef_filter="low"), ValueError, "coef_filter"),
    (dict(exact_small_layers="no"), TypeError, "exact_small_layers"),
    (dict(step_control="clip"), ValueError, "step_control"),
    (dict(kl_clip=0.0), ValueError, "kl_clip=0.0.*> 0"),
    (dict(kl_clip=-1), ValueError, "kl_clip"),
    (dict(lr=-0.1), ValueError, "lr=-0.1"),
    (dict(lr="0.1"), TypeError, "lr must be a number"),
    (dict(lr=True), TypeError, "lr must be a number"),
    (dict(rhs="twos"), ValueError, "rhs"),
    (dict(rhs="ief", ief_layer=3), TypeError, "ief_layer must be a module name"),
]


@pytest.mark.parametrize("kw,exc,msg", BAD_OPTIONS,
                         ids=[next(iter(kw)) + str(i) for i, (kw, _, _) in enumerate(BAD_OPTIONS)])
def test_constructor_checks_every_option(kw, exc, msg):
    opts = dict(num_samples=10, max_batch=4)
    opts.update(kw)
    with pytest.raises(exc, match=msg):
        fngd.FNGDPreconditioner(make_model("token"), **opts)


def test_good_options_of_every_type_are_accepted():
    pre = fngd.FNGDPreconditioner(make_model("token"), num_samples=np.int64(10),
                                  max_batch=np.int32(4), damping=np.float32(0.05), lr=0.1,
                                  kl_clip=1, damping_growth=2, modules=("proj", "head"),
                                  exact_small_layers=False, check_finite=False)
    assert pre.options["num_samples"] == 10 and type(pre.options["num_samples"]) is int
    assert type(pre.options["damping"]) is float and pre.options["kl_clip"] == 1.0
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fngd.FNGDPreconditioner("model", num_samples=10, max_batch=4)


def test_the_library_still_validates_the_config():
    """Behind the Python checks, build_config creates (and destroys) a throwaway handle, so the
    library's own validation runs at construction too."""
    model = make_model("token")
    pre = fngd.FNGDPreconditioner(model, num_samples=10, max_batch=4)
    bad = dict(pre.options, damping_growth=0.5)  # bypassing fngd._options
    with pytest.raises(fngd.FNGDError, match="damping_growth") as info:
        _handle.build_config(bad)
    assert info.value.status == _lib.ERROR_INVALID_ARGUMENT


def test_a_bad_learning_rate_from_a_callable_is_refused_at_the_step():
    model = make_model("token")
    pre = fngd.FNGDPreconditioner(model, num_samples=8, max_batch=8, lr=lambda: float("nan"))
    x, y = make_data("token", 8)
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match="learning rate"):
        pre.step(torch.arange(8))
    assert pre.stats()["steps_total"] == 0


def test_numpy_is_a_declared_dependency():
    text = open(PYPROJECT).read()
    deps = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    names = [re.split(r"[<>=!~ ;\[]", d.strip().strip('"'))[0]
             for d in deps.split(",") if d.strip()]
    assert "torch" in names and "numpy" in names, names


def _calls(path):
    tree = ast.parse(open(path).read())
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and n.attr.startswith("fngd_")}


def test_the_package_split():
    """fngd._handle is the only module that calls into a libfngd handle (fngd._lib binds the
    symbols and uses a few itself: the load-time ABI check and error strings); module kinds are
    classes, not `if kind ==` chains; preconditioner.py stays under 450 lines."""
    lib_own = {"fngd_config_init", "fngd_linear_desc", "fngd_status_string",
               "fngd_get_last_error"}
    for name in os.listdir(PKG):
        if not name.endswith(".py") or name in ("_handle.py",):
            continue
        used = _calls(os.path.join(PKG, name))
        assert used <= (lib_own if name == "_lib.py" else set()), (name, used)
        assert not re.search(r"\bkind\s*==", open(os.path.join(PKG, name)).read()), name
    assert _calls(os.path.join(PKG, "_handle.py")) >= {"fngd_step", "fngd_create",
                                                       "fngd_get_stats", "fngd_save_state"}
    with open(os.path.join(PKG, "preconditioner.py")) as f:
        assert sum(1 for _ in f) < 450
    kinds = {type(k).__name__ for k in fngd.layers.KINDS}
    assert kinds == {"LinearKind", "Conv2dKind", "Conv1dKind", "BatchNorm2dKind", "LayerNormKind",
                     "GroupNormKind", "EmbeddingKind", "MultiheadAttentionKind"}
    assert _options.RHS.keys() == {"ones", "ief"}
