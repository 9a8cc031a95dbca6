"""Run folder naming (docs/original.md#run-folders-and-names) with every loss-relevant option in the name
(docs/differences.md; docs/original.md#quirks, quirk 15).

Folder: ``<OUTPUT_DIR>/<DATASET>[_<HYBRID_JOINTS_TYPE>]/<MODEL.NAME>/<loss_type>[/<lifters>]``;
``<lifters>`` is the sorted ``MODEL_3D.NAMES`` joined by ``_`` (absent in 2D-only mode).

``loss_type`` starts exactly like the original's, then appends what the original left out:

* 2D-only (``LOSS.LOSS_3D`` False): ``only_loss_2d`` (the loss is the plain heatmap MSE; nothing
  else changes it). ``_notw`` is appended when ``LOSS.USE_TARGET_WEIGHT`` is off.
* single lifter::

      loss3dz{0|1}_dwa{0|1}_3xyw{LOSS_3D_XY_W}_3zw{LOSS_3D_Z_W}_ohklmw{OHKLM_W}      <- original
      _ohklm{0|1}_topk{OHKLM_TOP_K}_2dw{LOSS_2D_W}_3dw{LOSS_3D_W}_singlew{LOSS_SINGLE_W}

* several lifters::

      dropout{0|1}_loss3davg{0|1}_loss3dcons{0|1}_avgw{..}_consw{..}_singlew{..}       <- original
      _loss3dz{0|1}_dwa{0|1}_3xyw{..}_3zw{..}_3dw{..}_2dw{..}_ohklm{0|1}_ohklmw{..}_topk{..}
      _multi                                                                          <- original

* then, in both 3D modes, only when set: ``_loss3davg1_avgw{..}`` / ``_loss3dcons1_consw{..}``
  (single lifter; the multi name always carries them), and non-default ``_beta{LOSS.BETA}``,
  ``_dwaT{LOSS.DWA_T}``, ``_notw`` (no target weights), ``_nopp`` (``TEST.POST_PROCESS`` off,
  which changes the training decode).

Floats are written with Python ``str`` (``0.02``, ``1.0``) as in the original, so the original's
folder names are prefixes of these. Example (README command):
``output/h36m/hrnet/loss3dz1_dwa1_3xyw0.02_3zw0.04_ohklmw0.3_ohklm1_topk10_2dw0.5_3dw0.06_singlew0.8/sb``.
"""
from pathlib import Path

DEFAULT_BETA = 100.0
DEFAULT_DWA_T = 2.0


def _b(flag) -> int:
    return int(bool(flag))


def _f(value) -> str:
    return str(float(value))


def lifter_names(cfg):
    """Sorted, de-duplicated ``MODEL_3D.NAMES`` (the original sorts ``--model_3d``)."""
    return sorted({str(n).strip() for n in cfg.MODEL_3D.NAMES if str(n).strip()})


def _suffixes(L, cfg, multi: bool):
    parts = []
    if not multi:
        if L.LOSS_3D_AVG:
            parts.append(f"loss3davg1_avgw{_f(L.LOSS_3D_AVG_W)}")
        if L.LOSS_3D_CONS:
            parts.append(f"loss3dcons1_consw{_f(L.LOSS_3D_CONS_W)}")
    if float(L.BETA) != DEFAULT_BETA:
        parts.append(f"beta{_f(L.BETA)}")
    if L.DWA and float(L.DWA_T) != DEFAULT_DWA_T:
        parts.append(f"dwaT{_f(L.DWA_T)}")
    if not L.USE_TARGET_WEIGHT:
        parts.append("notw")
    if not cfg.TEST.POST_PROCESS:
        parts.append("nopp")
    return parts


def loss_type(cfg) -> str:
    """The ``loss_type`` folder name for ``cfg`` (format in the module docstring)."""
    L = cfg.LOSS
    if not L.LOSS_3D:
        return "only_loss_2d" + ("" if L.USE_TARGET_WEIGHT else "_notw")
    names = lifter_names(cfg)
    if len(names) <= 1:
        parts = [f"loss3dz{_b(L.LOSS_3D_Z)}_dwa{_b(L.DWA)}_3xyw{_f(L.LOSS_3D_XY_W)}_3zw{_f(L.LOSS_3D_Z_W)}"
                 f"_ohklmw{_f(L.OHKLM_W)}",
                 f"ohklm{_b(L.OHKLM)}_topk{int(L.OHKLM_TOP_K)}_2dw{_f(L.LOSS_2D_W)}_3dw{_f(L.LOSS_3D_W)}"
                 f"_singlew{_f(L.LOSS_SINGLE_W)}"]
        parts += _suffixes(L, cfg, multi=False)
        return "_".join(parts)
    parts = [f"dropout{_b(L.DROPOUT)}_loss3davg{_b(L.LOSS_3D_AVG)}_loss3dcons{_b(L.LOSS_3D_CONS)}"
             f"_avgw{_f(L.LOSS_3D_AVG_W)}_consw{_f(L.LOSS_3D_CONS_W)}_singlew{_f(L.LOSS_SINGLE_W)}",
             f"loss3dz{_b(L.LOSS_3D_Z)}_dwa{_b(L.DWA)}_3xyw{_f(L.LOSS_3D_XY_W)}_3zw{_f(L.LOSS_3D_Z_W)}"
             f"_3dw{_f(L.LOSS_3D_W)}_2dw{_f(L.LOSS_2D_W)}_ohklm{_b(L.OHKLM)}_ohklmw{_f(L.OHKLM_W)}"
             f"_topk{int(L.OHKLM_TOP_K)}"]
    parts += _suffixes(L, cfg, multi=True)
    parts.append("multi")
    return "_".join(parts)


def dataset_folder(cfg) -> str:
    name = cfg.DATASET.DATASET
    if cfg.DATASET.HYBRID_JOINTS_TYPE:
        name += "_" + cfg.DATASET.HYBRID_JOINTS_TYPE
    return name


def run_dir(cfg) -> Path:
    """``<OUTPUT_DIR>/<dataset>/<MODEL.NAME>/<loss_type>[/<lifters>]`` (not created here)."""
    base = Path(cfg.OUTPUT_DIR) / dataset_folder(cfg) / cfg.MODEL.NAME / loss_type(cfg)
    if cfg.LOSS.LOSS_3D:
        base = base / "_".join(lifter_names(cfg))
    return base
