"""Optimizers of the time-to-accuracy benchmark: one builder per optimizer, each returning a
Stepper with the same per-step interface, so that the training loop (tta_train.py) is one
function for all of them.

  sgd          torch.optim.SGD, momentum 0.9
  adamw        torch.optim.AdamW
  fngd-*       fngd.FNGDPreconditioner(model, num_samples, max_batch, **FNGD_VARIANTS[name])
               then torch.optim.SGD (momentum 0.9) on the same parameters, in the usage
               pattern of python/README.md
  asdl-kfac    ASDL KfacGradientMaker (empirical Fisher, curvature and inverse every step,
               ASDL's defaults) then SGD momentum 0.9, as bench/resnet18_cifar.py drives it
  asdl-smw     ASDL SmwEmpNaturalGradientMaker: the same damped empirical-Fisher natural
               gradient as FNGD, Gram and solve recomputed every step (FNGD without reuse)
  singd        SINGD (singd package; dense structures, its default T=10, lr_cov, alpha1) on
               Linear/Conv2d weights; the parameters it does not support (BatchNorm, LayerNorm)
               get SGD momentum 0.9 at --singd-rest-lr

The FNGD variants are data: a name -> FNGDPreconditioner keyword arguments table. A variant
whose keywords the installed fngd does not accept is skipped with a note (checked with
inspect.signature), so new library options can be listed here before they land.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# ---- the FNGD variants: name -> FNGDPreconditioner keyword arguments ----------------------
# fngd-layer / fngd-global: the library's defaults (whatever they are in the build that runs;
# the JSON records the resolved options of every run). *-plain: the paper's method (plain
# solve, no exact small layers, no step control). Variants with options the installed fngd
# does not accept are skipped with a note.
FNGD_VARIANTS: dict[str, dict] = {
    "fngd-layer": {"mode": "layer"},
    "fngd-global": {"mode": "global"},
    # The paper's method, then each fix alone on top of it, then the fixes without the clip.
    "fngd-layer-plain": {"mode": "layer", "coef_filter": "none", "exact_small_layers": False,
                         "step_control": "none"},
    "fngd-global-plain": {"mode": "global", "coef_filter": "none", "step_control": "none"},
    "fngd-layer-plain+range": {"mode": "layer", "coef_filter": "range",
                               "exact_small_layers": False, "step_control": "none"},
    "fngd-layer-plain+exact": {"mode": "layer", "coef_filter": "none",
                               "exact_small_layers": True, "step_control": "none"},
    "fngd-layer-plain+klclip": {"mode": "layer", "coef_filter": "none",
                                "exact_small_layers": False, "step_control": "kl_clip"},
    "fngd-layer-noclip": {"mode": "layer", "step_control": "none"},
    "fngd-global-noclip": {"mode": "global", "step_control": "none"},
    "fngd-layer-graft": {"mode": "layer", "step_control": "graft"},
    # Beyond the paper, on top of the defaults.
    "fngd-layer-r1": {"mode": "layer", "recompute_every": 1},
    "fngd-global-r1": {"mode": "global", "recompute_every": 1},
    "fngd-layer-ief": {"mode": "layer", "rhs": "ief"},
    "fngd-global-ief": {"mode": "global", "rhs": "ief"},
}

THIRD_PARTY = ("asdl-kfac", "asdl-smw", "singd")
FIRST_ORDER = ("sgd", "adamw")

# ---- default sweep grids, per family (--lrs / --dampings override) ------------------------
# Every optimizer gets the same number of learning rates (4); the curvature methods also get
# a 3-point damping grid (their damping is a second hyper-parameter without a safe default).
DEFAULT_GRIDS: dict[str, dict[str, list[float]]] = {
    "sgd": {"lr": [0.01, 0.03, 0.1, 0.3]},
    "adamw": {"lr": [3e-4, 1e-3, 3e-3, 1e-2]},
    "fngd": {"lr": [0.01, 0.03, 0.1, 0.3], "damping": [0.01, 0.1, 1.0]},
    "asdl-kfac": {"lr": [0.003, 0.01, 0.03, 0.1], "damping": [1e-3, 1e-2, 1e-1]},
    "asdl-smw": {"lr": [0.01, 0.03, 0.1, 0.3], "damping": [0.01, 0.1, 1.0]},
    "singd": {"lr": [0.01, 0.03, 0.1, 0.3], "damping": [1e-4, 1e-3, 1e-2]},
}
# --quick: one setting each (a mid-grid point known to train).
QUICK_SETTING: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.1}, "adamw": {"lr": 3e-3}, "fngd": {"lr": 0.1, "damping": 1.0},
    "asdl-kfac": {"lr": 0.01, "damping": 1e-2}, "asdl-smw": {"lr": 0.1, "damping": 1.0},
    "singd": {"lr": 0.03, "damping": 1e-3},
}


def family(name: str, variants: dict | None = None) -> str:
    variants = FNGD_VARIANTS if variants is None else variants
    if name in variants:
        return "fngd"
    if name in FIRST_ORDER or name in THIRD_PARTY:
        return name
    raise KeyError(f"unknown optimizer {name!r} (known: {', '.join(known(variants))})")


def known(variants: dict | None = None) -> list[str]:
    variants = FNGD_VARIANTS if variants is None else variants
    return list(FIRST_ORDER) + list(variants) + list(THIRD_PARTY)


@dataclass
class Context:
    """Everything a builder needs besides the model and the swept setting."""
    num_samples: int
    max_batch: int
    momentum: float = 0.9
    weight_decay: float = 5e-4          # SGD-style decay (sgd, fngd, kfac, smw, singd)
    adamw_weight_decay: float = 1e-2    # torch's AdamW default
    singd_rest_lr: float = 0.1          # SGD lr of the parameters SINGD does not support
    fngd_extra: dict = field(default_factory=dict)   # merged into every FNGD variant
    variants: dict = field(default_factory=lambda: dict(FNGD_VARIANTS))


# ---- the uniform interface ---------------------------------------------------------------

class Stepper:
    """One optimizer bound to one model. step(x, y, ids) does one full training step (zero
    grad, forward, backward, preconditioning, update) and returns the plain mean cross-entropy
    of the batch as a detached tensor; end_epoch() after every epoch; set_lr_factor(f) scales
    every learning rate to f times its base value (the schedule); info() for the report."""

    phase = None  # FNGD: "collect" / "reuse" of the epoch about to run

    def __init__(self, model: nn.Module, optimizers: list):
        self.model = model
        self.optimizers = optimizers
        for opt in optimizers:
            for g in opt.param_groups:
                g.setdefault("base_lr", g["lr"])

    def set_lr_factor(self, f: float) -> None:
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * f

    def current_lr(self) -> float:
        return self.optimizers[0].param_groups[0]["lr"]

    def zero_grad(self):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def update(self):
        for opt in self.optimizers:
            opt.step()

    def step(self, x, y, ids) -> torch.Tensor:
        self.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.update()
        return loss.detach()

    def end_epoch(self) -> None:
        pass

    def info(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def _sgd(params, lr, ctx):
    return torch.optim.SGD(params, lr=lr, momentum=ctx.momentum, weight_decay=ctx.weight_decay)


def build_sgd(model, setting, ctx):
    return Stepper(model, [_sgd(model.parameters(), setting["lr"], ctx)])


def build_adamw(model, setting, ctx):
    return Stepper(model, [torch.optim.AdamW(model.parameters(), lr=setting["lr"],
                                             weight_decay=ctx.adamw_weight_decay)])


# ---- FNGD ---------------------------------------------------------------------------------

def fngd_signature():
    import fngd
    return inspect.signature(fngd.FNGDPreconditioner)


def fngd_kwargs(name: str, ctx: Context) -> dict:
    """The variant's keyword arguments with --fngd-extra merged in (extra wins)."""
    kw = dict(ctx.variants[name])
    kw.update(ctx.fngd_extra)
    return kw


def fngd_unavailable(name: str, ctx: Context) -> str | None:
    """Why the installed fngd cannot run this variant (None when it can)."""
    try:
        import fngd
        fngd._lib.load()  # the shared library, and that it matches the binding
        sig = fngd_signature()
    except Exception as e:  # library not found or of another version, import error
        return f"fngd not usable: {type(e).__name__}: {e}"
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    missing = sorted(k for k in fngd_kwargs(name, ctx) if k not in sig.parameters)
    if missing:
        return ("FNGDPreconditioner does not accept " + ", ".join(missing) +
                " (option not in this fngd yet)")
    return None


class FNGDStepper(Stepper):
    """python/README.md's loop: plain loss + pre.step(ids) after backward, except in global
    mode's reuse epochs, where the per-sample losses are weighted by pre.loss_weights(ids)."""

    def __init__(self, model, opt, pre, kwargs):
        super().__init__(model, [opt])
        self.pre = pre
        self.kwargs = kwargs

    @property
    def phase(self):
        return self.pre.phase

    def step(self, x, y, ids):
        opt, pre = self.optimizers[0], self.pre
        opt.zero_grad()
        out = self.model(x)
        if pre.needs_loss_weights:  # global mode, reuse epochs: one ordinary backward
            w = pre.loss_weights(ids)
            per = F.cross_entropy(out, y, reduction="none")
            (w * per).mean().backward()
            loss = per.detach().mean()
        else:
            loss = F.cross_entropy(out, y)
            loss.backward()
            pre.step(ids)
        opt.step()
        return loss.detach()

    def end_epoch(self):
        self.pre.end_epoch()

    def info(self):
        plain = (bool, int, float, str, type(None))
        out = {"options": {k: v for k, v in self.pre.options.items() if isinstance(v, plain)}}
        try:
            s = self.pre.stats()
        except Exception as e:
            out["stats_error"] = str(e)
            return out
        out.update({k: v for k, v in s.items() if isinstance(v, plain)})
        return out

    def close(self):
        self.pre.close()


def build_fngd(name, model, setting, ctx):
    import fngd
    kw = fngd_kwargs(name, ctx)
    if "damping" in setting:  # equals the variant's own damping when it fixes one (grid())
        kw["damping"] = setting["damping"]
    opt = _sgd(model.parameters(), setting["lr"], ctx)
    if "lr" in fngd_signature().parameters and "lr" not in kw:
        kw["lr"] = lambda: opt.param_groups[0]["lr"]  # the current (scheduled) learning rate
    pre = fngd.FNGDPreconditioner(model, num_samples=ctx.num_samples, max_batch=ctx.max_batch,
                                  **kw)
    shown = {k: (v if not callable(v) else "<current lr>") for k, v in kw.items()}
    return FNGDStepper(model, opt, pre, shown)


# ---- ASDL (asdfghjkl) ---------------------------------------------------------------------

class ASDLStepper(Stepper):
    """ASDL gradient makers run forward, backward and preconditioning in one call; SGD then
    steps. data_size follows the batch (a smaller last batch included)."""

    def __init__(self, model, opt, gm, quiet):
        super().__init__(model, [opt])
        self.gm, self.quiet = gm, quiet

    def step(self, x, y, ids):
        self.zero_grad()
        self.gm.config.data_size = len(y)
        dummy = self.gm.setup_model_call(self.model, x)
        self.gm.setup_loss_call(F.cross_entropy, dummy, y)
        with warnings.catch_warnings():
            # SMW: "gram_hada not supported for BatchNorm2d" every step; KFAC: torch's
            # FutureWarning about ASDL's non-full backward hooks
            warnings.simplefilter("ignore", UserWarning if self.quiet else FutureWarning)
            warnings.simplefilter("ignore", FutureWarning)
            _, loss = self.gm.forward_and_backward()
        self.update()
        return loss.detach()


def build_asdl_kfac(model, setting, ctx):
    import asdl  # the asdfghjkl distribution installs the `asdl` package
    opt = _sgd(model.parameters(), setting["lr"], ctx)
    cfg = asdl.PreconditioningConfig(data_size=ctx.max_batch, damping=setting["damping"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "does not support <module>" for containers etc.
        gm = asdl.KfacGradientMaker(model, cfg, fisher_type="fisher_emp")
    return ASDLStepper(model, opt, gm, quiet=False)


def build_asdl_smw(model, setting, ctx):
    import asdl
    opt = _sgd(model.parameters(), setting["lr"], ctx)
    cfg = asdl.SmwEmpNaturalGradientConfig(data_size=ctx.max_batch, damping=setting["damping"])
    return ASDLStepper(model, opt, asdl.SmwEmpNaturalGradientMaker(model, cfg), quiet=True)


# ---- SINGD --------------------------------------------------------------------------------

def build_singd(model, setting, ctx):
    from singd.optim.optimizer import SINGD
    supported = SINGD.SUPPORTED_MODULES
    inside = {id(p) for m in model.modules() if isinstance(m, supported)
              for p in m.parameters(recurse=False)}
    rest = [p for p in model.parameters() if id(p) not in inside]
    opt = SINGD(model, lr=setting["lr"], damping=setting["damping"], momentum=ctx.momentum,
                weight_decay=ctx.weight_decay, warn_unsupported=False)
    opts = [opt]
    if rest:
        opts.append(_sgd(rest, ctx.singd_rest_lr, ctx))
    return Stepper(model, opts)


# ---- dispatch -----------------------------------------------------------------------------

def unavailable(name: str, ctx: Context) -> str | None:
    """None when `name` can run here, else the reason (a note for the report)."""
    fam = family(name, ctx.variants)
    if fam == "fngd":
        return fngd_unavailable(name, ctx)
    mod = {"asdl-kfac": "asdl", "asdl-smw": "asdl", "singd": "singd.optim.optimizer"}.get(fam)
    if mod:
        try:
            __import__(mod)
        except Exception as e:
            return f"not importable ({mod}): {type(e).__name__}: {e}"
    return None


def build(name: str, model: nn.Module, setting: dict, ctx: Context) -> Stepper:
    fam = family(name, ctx.variants)
    if fam == "fngd":
        return build_fngd(name, model, setting, ctx)
    return {"sgd": build_sgd, "adamw": build_adamw, "asdl-kfac": build_asdl_kfac,
            "asdl-smw": build_asdl_smw, "singd": build_singd}[fam](model, setting, ctx)


def grid(name: str, ctx: Context, overrides: dict | None = None, quick: bool = False):
    """The list of settings (dicts of lr and, for curvature methods, damping) to sweep."""
    fam = family(name, ctx.variants)
    if quick:
        return [dict(QUICK_SETTING[fam])]
    g = {k: list(v) for k, v in DEFAULT_GRIDS[fam].items()}
    for k, v in (overrides or {}).get(fam, {}).items():
        g[k] = list(v)
    if fam == "fngd":
        fixed = {**ctx.variants[name], **ctx.fngd_extra}.get("damping")
        if fixed is not None:  # the variant fixes its damping: no damping sweep
            g["damping"] = [fixed]
    keys = list(g)
    out = [{}]
    for k in keys:
        out = [{**s, k: v} for s in out for v in g[k]]
    return out


def setting_label(setting: dict) -> str:
    return ",".join(f"{k}={v:g}" for k, v in setting.items())


def cosine_factor(step: int, total: int) -> float:
    """Cosine decay from 1 to 0 over `total` steps."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
