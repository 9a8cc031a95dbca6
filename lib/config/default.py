"""The single source of every default (yacs). Experiment YAMLs and CLI flags override it.

Groups follow the HRNet reference (MODEL / DATASET / TRAIN / TEST / LOSS / CUDNN); the
L2D-specific options that the original passed as flags live in LOSS and MODEL_3D.
"""
from yacs.config import CfgNode as CN

_C = CN()

_C.OUTPUT_DIR = "output"           # runs go to <OUTPUT_DIR>/<dataset>/<MODEL.NAME>/<loss_type>
_C.LOG_DIR = "log"                 # accepted for HRNet YAMLs; the log is written into the run folder
_C.DATA_DIR = ""                   # prefix joined to DATASET.ROOT and MODEL.PRETRAINED when set
_C.GPUS = (0,)                     # batch = TRAIN.BATCH_SIZE_PER_GPU per process (torchrun: one process per GPU)
_C.WORKERS = 4                     # DataLoader workers per process, capped by its CPUs (validation: half)
_C.PRINT_FREQ = 100                # log / progress-bar refresh every N steps (host syncs only here)
_C.PIN_MEMORY = True               # pinned host memory for faster host-to-GPU copies
_C.AUTO_RESUME = False             # accepted for HRNet YAMLs; use --resume
_C.SEED = 42                       # torch / numpy / python seed (per rank: SEED + rank)
_C.USE_CUDA = True                 # False forces the CPU
_C.DIST_TIMEOUT_MINUTES = 60.0     # torchrun: how long a collective waits for the slowest rank (NCCL's own default: 10)
_C.TRUSTED_FILES = []              # pickles / checkpoints (or folders) allowed to run code when read; [] = none
_C.CUSTOM_IMPORTS = []             # Python modules imported before anything is built (your register_lifter / register_pose_net)
_C.DEBUG = CN(new_allowed=True)   # accepted for compatibility with HRNet YAMLs; unused

_C.CUDNN = CN()
_C.CUDNN.BENCHMARK = True          # cudnn autotuner
_C.CUDNN.DETERMINISTIC = False     # deterministic cudnn kernels
_C.CUDNN.ENABLED = True            # use cudnn

# ----------------------------------------------------------------- 2D detector
_C.MODEL = CN()
_C.MODEL.NAME = "pose_hrnet"       # registered detector: pose_hrnet (alias hrnet), pose_resnet, or yours
_C.MODEL.INIT_WEIGHTS = True       # initialise from MODEL.PRETRAINED when it is set
_C.MODEL.PRETRAINED = ""           # full checkpoint of the detector (loaded strictly)
_C.MODEL.PRETRAINED_FORMAT = "h36m"  # joint set of MODEL.PRETRAINED: h36m (our layout) | coco | mpii | imagenet (converted at load time, model_2d/convert.py)
_C.MODEL.NUM_JOINTS = 17           # detector output channels (always Human3.6M-17; Panoptic remaps to 15)
_C.MODEL.TAG_PER_JOINT = True      # accepted for HRNet YAMLs; unused
_C.MODEL.TARGET_TYPE = "gaussian"  # heatmap target type (gaussian only)
_C.MODEL.IMAGE_SIZE = [256, 256]   # (width, height)
_C.MODEL.HEATMAP_SIZE = [64, 64]   # (width, height)
_C.MODEL.SIGMA = 2.0               # Gaussian sigma of the targets, heatmap pixels
_C.MODEL.SOFT_ARGMAX_TOL_PX = 1e-6  # CPU soft-argmax: largest error (heatmap px) its window may cause; 0 = the full map everywhere
_C.MODEL.EXTRA = CN(new_allowed=True)   # network table (HRNet stages / ResNet depth)
_C.MODEL.VIT = CN()                # MODEL.NAME vitpose only
_C.MODEL.VIT.SIZE = "base"         # tiny | small | base | large | huge (or S/B/L/H): width, depth, heads
_C.MODEL.VIT.PATCH_SIZE = 16       # patch side in pixels (official: 16); MODEL.IMAGE_SIZE must divide by it
_C.MODEL.VIT.DROP_PATH_RATE = -1.0  # stochastic depth at the last block; < 0 = the size's official rate

# ----------------------------------------------------------------- 3D lifters
_C.MODEL_3D = CN()
_C.MODEL_3D.NAMES = ["sb"]         # --model_3d, sorted; >=2 names = multi-model guidance
_C.MODEL_3D.STATS = ""             # optional stats file (npz / original pkl) for 'sb'
_C.MODEL_3D.CROSS_VALID = True     # evaluate lifters on disk but not trained with (multi-model)
_C.MODEL_3D.WEIGHTS = CN()         # <NAME>: weight file of lifter <name> (open map); absent or '' = its default path
# Network sizes (published sizes by default; recorded in trained checkpoints, which load without them)
_C.MODEL_3D.IGANET = CN()
_C.MODEL_3D.IGANET.LAYERS = 3      # IGANet blocks
_C.MODEL_3D.IGANET.CHANNEL = 512   # IGANet feature width (multiple of 16; encoder C/8..C, U-MLP C/2)
_C.MODEL_3D.MIXSTE = CN()
_C.MODEL_3D.MIXSTE.DIM = 512       # MixSTE embedding width (multiple of HEADS)
_C.MODEL_3D.MIXSTE.DEPTH = 8       # MixSTE spatial + temporal block pairs
_C.MODEL_3D.MIXSTE.HEADS = 8       # MixSTE attention heads

# ----------------------------------------------------------------- losses
_C.LOSS = CN()
_C.LOSS.USE_TARGET_WEIGHT = True   # multiply heatmap loss by joint visibility
_C.LOSS.USE_DIFFERENT_JOINTS_WEIGHT = False  # accepted for HRNet YAMLs; unused
_C.LOSS.USE_OHKM = False           # accepted for HRNet YAMLs; unused (see LOSS.OHKLM)
_C.LOSS.TOPK = 8                   # accepted for HRNet YAMLs; unused (see LOSS.OHKLM_TOP_K)
_C.LOSS.LOSS_3D = False            # --loss_3d
_C.LOSS.LOSS_3D_Z = False          # --loss_3d_z (xy and z apart)
_C.LOSS.OHKLM = False              # --ohklm
_C.LOSS.OHKLM_TOP_K = 10           # --top_k
_C.LOSS.DWA = True                 # always on in the original (--dwa forced)
_C.LOSS.DWA_T = 2.0
_C.LOSS.DROPOUT = False            # --dropout (lifter dropout)
_C.LOSS.LOSS_3D_AVG = False        # --loss_3d_avg
_C.LOSS.LOSS_3D_CONS = False       # --loss_3d_cons
_C.LOSS.LOSS_2D_W = 0.5
_C.LOSS.OHKLM_W = 0.3
_C.LOSS.LOSS_3D_XY_W = 0.02
_C.LOSS.LOSS_3D_Z_W = 0.04
_C.LOSS.LOSS_3D_W = 0.06
_C.LOSS.LOSS_3D_CONS_W = 0.1
_C.LOSS.LOSS_3D_AVG_W = 0.05
_C.LOSS.LOSS_SINGLE_W = 1.0
_C.LOSS.BETA = 100.0               # soft-argmax inverse temperature in training

# ----------------------------------------------------------------- data
_C.DATASET = CN()
_C.DATASET.ROOT = ""               # prepared dataset folder (run/prepare_h36m.py / prepare_panoptic.py)
_C.DATASET.DATASET = "h36m"        # registered dataset: h36m | panoptic
_C.DATASET.TRAIN_SET = "train"     # split used for training
_C.DATASET.TEST_SET = "valid"      # split used for validation
_C.DATASET.DATA_FORMAT = "jpg"     # image file format
_C.DATASET.HYBRID_JOINTS_TYPE = ""  # appended to the dataset name in run folders when set
_C.DATASET.SELECT_DATA = False     # accepted for HRNet YAMLs; unused
_C.DATASET.COLOR_RGB = True        # feed RGB (not BGR) images
_C.DATASET.AUGMENT = False         # the original never augments; on for 2D pre-training only
_C.DATASET.FLIP = True             # with AUGMENT: random horizontal flip
_C.DATASET.SCALE_FACTOR = 0.25     # with AUGMENT: random scale range
_C.DATASET.ROT_FACTOR = 30         # with AUGMENT: random rotation range, degrees
_C.DATASET.PROB_HALF_BODY = 0.0    # with AUGMENT: probability of a half-body crop
_C.DATASET.NUM_JOINTS_HALF_BODY = 8  # with AUGMENT: visible joints needed for half-body
_C.DATASET.TRAIN_INTERVAL = 40     # every 40th frame (Human3.6M train)
_C.DATASET.VALID_INTERVAL = 100    # every 100th frame (Human3.6M valid)
_C.DATASET.MAX_SAMPLES = 0         # >0: keep the first N samples of a split (quick runs)
_C.DATASET.MASK_LOW_CONFIDENCE = False  # Panoptic: joints with confidence <= 0.1 out of 3D losses/metrics/stats

# ----------------------------------------------------------------- training
_C.TRAIN = CN()
_C.TRAIN.LR_FACTOR = 0.1           # MultiStepLR gamma
_C.TRAIN.LR_STEP = [90, 110]       # MultiStepLR milestones (epochs)
_C.TRAIN.LR = 0.001                # Adam learning rate
_C.TRAIN.OPTIMIZER = "adam"        # adam (no weight decay, as the original) | sgd | adamw (ViTPose)
_C.TRAIN.MOMENTUM = 0.9            # sgd momentum
_C.TRAIN.WD = 0.0001               # unused with Adam, as in the original; sgd / adamw weight decay
_C.TRAIN.LAYER_DECAY = -1.0        # adamw: LR x this ** (depth below the head) per ViT block; < 0 = MODEL.VIT.SIZE's official value; 1 = off
_C.TRAIN.WARMUP_ITERS = 0          # >0: linear LR warm-up over the first N steps of the run (0 = off)
_C.TRAIN.WARMUP_RATIO = 0.001      # warm-up starts at LR x this
_C.TRAIN.CLIP_GRAD_NORM = 0.0      # >0: clip the detector's gradient L2 norm to this (0 = off)
_C.TRAIN.NESTEROV = False          # sgd nesterov
_C.TRAIN.GAMMA1 = 0.99             # accepted for HRNet YAMLs; unused
_C.TRAIN.GAMMA2 = 0.0              # accepted for HRNet YAMLs; unused
_C.TRAIN.BEGIN_EPOCH = 0           # first epoch index of a fresh run
_C.TRAIN.END_EPOCH = 140           # unused by L2D (see TRAIN.EPOCHS)
_C.TRAIN.EPOCHS = 40               # --epochs N runs epochs 0..N inclusive
_C.TRAIN.LR_BUMP_EPOCH = 30        # after this epoch's scheduler step, LR x LR_BUMP_FACTOR
_C.TRAIN.LR_BUMP_FACTOR = 5.0
_C.TRAIN.MAX_STEPS_PER_EPOCH = 0   # >0: stop each epoch after N steps (quick runs)
_C.TRAIN.KEEP_EPOCH_WEIGHTS = False  # also write every epoch's detector weights as epoch_<k>.pth
_C.TRAIN.FINETUNE = ""             # --finetune: detector checkpoint to start from
_C.TRAIN.RESUME = False            # --resume: continue from <run>/checkpoint.pth
_C.TRAIN.SHUFFLE = True            # shuffle the training set every epoch
_C.TRAIN.BATCH_SIZE_PER_GPU = 32   # training batch per process
_C.TRAIN.AMP = "none"              # none | fp16 | bf16
_C.TRAIN.SYNC_BN = False           # SyncBatchNorm under torchrun
_C.TRAIN.CHANNELS_LAST = False     # channels_last memory format for the detector
_C.TRAIN.PREFETCH_FACTOR = 2       # batches prefetched per DataLoader worker
_C.TRAIN.CACHE_MB = 0              # keep an un-augmented training split's samples (up to this many MiB) after their first read; 0 = read each time (as the original)
_C.TRAIN.TF32 = True               # float32 matmuls and convolutions may use TF32 on Ampere+ GPUs (the original's torch 1.8 did both)

# ----------------------------------------------------------------- validation
_C.TEST = CN()
_C.TEST.BATCH_SIZE_PER_GPU = 32    # validation batch per process
_C.TEST.FLIP_TEST = False          # accepted for HRNet YAMLs; unused (as the original)
_C.TEST.POST_PROCESS = False       # quarter-pixel shift, also applied to training decoding
_C.TEST.SHIFT_HEATMAP = False      # accepted for HRNet YAMLs; unused (as the original)
_C.TEST.MODEL_FILE = ""            # accepted for HRNet YAMLs; use --model_dir
_C.TEST.BETA = 100.0               # --beta
_C.TEST.SOFT_ARGMAX = True         # --argmax sets False
_C.TEST.ENSEMBLE = False           # --ensemble (median over lifters)
_C.TEST.ACTION_VALID = False       # --action_valid
_C.TEST.USE_GT_BBOX = True         # person boxes from ground-truth 2D (as the original)
_C.TEST.VIS_NUM = 0                # --vis_num
_C.TEST.CACHE_MB = 0               # keep the validation batches (up to this many MiB) and replay them; 0 = read each time (as the original)
_C.TEST.DETECTIONS = ""            # --detections: score the lifters on the 2D of this VideoPose3D-format file
_C.TEST.DATA_3D = ""               # --data_3d: with DETECTIONS, the 3D of VideoPose3D's data_3d_h36m.npz ('' = the prepared split's)
# Evaluation protocol (docs/detections.md#protocols); the defaults are the original's
_C.TEST.PROTOCOL = CN()
_C.TEST.PROTOCOL.AVERAGE = "frame"   # frame (every sample weighs the same) | action (mean of the per-action means)
_C.TEST.PROTOCOL.INTERVAL = 0        # 0 = every prepared frame; N = frames 1, N+1, 2N+1, ... only
_C.TEST.PROTOCOL.FLIP = False        # lifters' test-time flip: mirrored 2D lifted, un-mirrored, averaged
_C.TEST.PROTOCOL.N_MPJPE = False     # also N-MPJPE (scale-aligned MPJPE) beside MPJPE and P-MPJPE
_C.TEST.PROTOCOL.EXCLUDE_S11_DIRECTIONS = False  # leave out S11's "Directions" recording (corrupt video)

# ----------------------------------------------------------------- lifter training (run/train_lifter.py)
_C.LIFTER_TRAIN = CN()
_C.LIFTER_TRAIN.EPOCHS = 0         # 0 = the lifter's own default (docs/original.md#lifters-own-training)
_C.LIFTER_TRAIN.BATCH_SIZE = 0      # 0 = the lifter's recipe (model_3d/recipes.py)
_C.LIFTER_TRAIN.LR = 0.0           # 0 = the lifter's recipe
_C.LIFTER_TRAIN.TRAIN_SET = ""     # split the lifters train on ('' = DATASET.TRAIN_SET; e.g. a pose-only split)
_C.LIFTER_TRAIN.MAX_STEPS_PER_EPOCH = 0
_C.LIFTER_TRAIN.FLIP = True        # flip augmentation for the screen-normalised lifters
_C.LIFTER_TRAIN.INIT_MEAN_POSE = True   # output layer fitted to the training poses (recipes with init_mean_pose)
_C.LIFTER_TRAIN.BN_RECALIBRATE = True   # BN statistics re-estimated on the training set (recipes with bn_recalibrate)
_C.LIFTER_TRAIN.DETECTIONS = ""    # --detections: train (and validate) on the 2D of this VideoPose3D-format file
_C.LIFTER_TRAIN.DATA_3D = ""       # --data_3d: with DETECTIONS, the 3D of VideoPose3D's data_3d_h36m.npz ('' = the prepared splits')
# Per-lifter settings, an open map: LIFTER_TRAIN.<NAME>.{EPOCHS, BATCH_SIZE, LR} (lib.config.LIFTER_TRAIN_KEYS);
# a value > 0 there wins over LIFTER_TRAIN.<KEY> (0 = that one).

# ----------------------------------------------------------------- reproduction pipeline (run/reproduce.py)
# A preset (experiments/pipeline/*.yaml) is an experiment file that sets these, DATASET.ROOT/DATASET.DATASET,
# OUTPUT_DIR (where the stages and the report go) and SEED; every stage gets DATASET.ROOT, SEED, the lifter
# weights and PIPELINE.OPTS as KEY VALUE overrides of its own config file.
_C.PIPELINE = CN()
_C.PIPELINE.SYNTHETIC = ""         # h36m | panoptic: generate the embedded synthetic set into DATASET.ROOT when absent
_C.PIPELINE.SYNTH_ARGS = []        # extra run/make_demo_data.py arguments, e.g. ['--frames-per-seq', '80']
_C.PIPELINE.SOURCE = ""            # raw dataset folder prepared into DATASET.ROOT ('' = ROOT is already prepared)
_C.PIPELINE.PREPARE_ARGS = []      # extra run/prepare_<dataset>.py arguments, e.g. ['--train-interval', '5']
_C.PIPELINE.DETECTOR_CFG = "experiments/demo/tiny_96x128.yaml"  # detector experiment file (fine-tuning, validation)
_C.PIPELINE.PRETRAIN_CFG = ""      # experiment file of the 2D pre-training ('' = DETECTOR_CFG)
_C.PIPELINE.PRETRAINED = ""        # detector checkpoint to fine-tune from; '' = run the 2D pre-training stage
_C.PIPELINE.LIFTER_CFG = ""        # experiment file of the lifter training ('' = DETECTOR_CFG)
_C.PIPELINE.LIFTERS = ["sb"]       # lifters trained, validated and reported (the first one validates 2D-only runs)
_C.PIPELINE.TRAIN_LIFTERS = True   # False: use the files in MODEL_3D.WEIGHTS (or the default paths) as they are
_C.PIPELINE.LIFTER_EPOCHS = []     # epochs per lifter in LIFTERS order ([] = each recipe's; 0 = the recipe's)
_C.PIPELINE.LIFTER_OPTS = []       # KEY VALUE pairs for the lifter training only
_C.PIPELINE.PRETRAIN_EPOCHS = 9    # 2D pre-training runs epochs 0..N (-1: its file's TRAIN.EPOCHS)
_C.PIPELINE.PRETRAIN_OPTS = []     # KEY VALUE pairs for the 2D pre-training only
_C.PIPELINE.FINETUNE_EPOCHS = 3    # each fine-tuning (2D-only, guided) runs epochs 0..N from one checkpoint (-1: TRAIN.EPOCHS)
_C.PIPELINE.FINETUNE_OPTS = []     # KEY VALUE pairs for every fine-tuning (e.g. TRAIN.MAX_STEPS_PER_EPOCH)
_C.PIPELINE.SINGLE = ["sb"]        # one single-lifter guided run per name
_C.PIPELINE.SINGLE_FLAGS = ["--loss_3d_z", "--ohklm"]   # run/train_hrnet.py flags of those runs (--loss_3d implied)
_C.PIPELINE.LEAVE_ONE_OUT = False  # one multi-model run per lifter of LIFTERS, guided by all the others (>= 3 lifters)
_C.PIPELINE.MULTI_FLAGS = ["--loss_3d_z", "--ohklm"]    # run/train_hrnet.py flags of those runs (--loss_3d implied)
_C.PIPELINE.VALID_CHECKPOINT = "model_best.pth"          # which file of each detector run is validated
_C.PIPELINE.REPORT_SET = ""        # split the report's figures come from ('' = DATASET.TEST_SET, where checkpoints are chosen)
_C.PIPELINE.SEEDS = []             # one pre-training + fine-tunings per seed, and the verdict over them ([] = SEED alone)
_C.PIPELINE.OPTS = []              # KEY VALUE pairs for every stage (e.g. USE_CUDA False, DATASET.MAX_SAMPLES 64)

_C.CFG_NAME = ""                   # basename of the experiment file (for log names)
_C.CFG_FILE = ""                   # the experiment file as given (--cfg); set by run/*.py, used in hints
