"""
Train a GPT with SPAttention, nanoGPT style.

    python train.py config/train_shakespeare_char.py      # start here: the baby GPT on Tiny Shakespeare
    python train.py config/train_shakespeare_char_cpu.py  # the same idea, small enough for a laptop CPU
    python train.py config/train_shakespeare_char.py --attn=dense --out_dir=out-shakespeare-char-dense
    python train.py                                       # the defaults: GPT-2 small on FineWeb-Edu
    python train.py --help                                # every setting, with its default
    torchrun --standalone --nproc_per_node=2 train.py config/train_shakespeare_char.py \
        --gradient_accumulation_steps=2 --out_dir=out-ddp                # 2 GPUs, DDP

Every setting is a field of TrainConfig; a config file or --key=value may set any of them, and an
unknown key, a value of the wrong type or a model that cannot be built stops with one line saying
so, before any data is read. The checkpoint out_dir/ckpt.pt always holds the latest state (written
atomically), so --init_from=resume continues exactly where a run stopped: after the last iteration,
an evaluation, Ctrl-C, or --time_limit_s (which stops as Ctrl-C does, for jobs given a fixed time).
A run from scratch refuses an out_dir that holds a checkpoint, rather than replace it.

Reading order: TrainConfig, then train() (the whole run on one screen), then the helpers it calls,
grouped by what they do (set-up, the loop's steps, checkpoints, Ctrl-C and printing), then the
command line.

Under torchrun every process takes its share of each step's micro-batches (gradient_accumulation_steps
must divide by the number of processes), so N processes train on the same global batches, in the
same order, as one process does.
"""

import csv
import dataclasses
import gc
import inspect
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from model import BAND_PATTERNS, GPT, GPTConfig, ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
# Datasets whose prepare.py needs no download: train.py prepares these by itself when needed.
OFFLINE_DATASETS = ("shakespeare_char", "shakespeare", "pystdlib")
GPT2_VOCAB_SIZE = 50304  # GPT-2's 50257 tokens padded to a multiple of 64: BPE datasets have no meta.pkl
QUICK_START = "python train.py config/train_shakespeare_char.py"
DTYPES = ("auto", "float32", "bfloat16", "float16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CPU_QUICK_START = "python train.py config/train_shakespeare_char_cpu.py"


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out"               # where ckpt.pt and log.csv go
    eval_interval: int = 2000          # evaluate (and checkpoint) every this many iterations
    log_interval: int = 1              # print a log line every this many iterations
    eval_iters: int = 200              # batches per split in an evaluation
    eval_only: bool = False            # evaluate a checkpoint once and stop (with init_from='resume')
    init_from: str = "scratch"         # 'scratch' or 'resume' (from out_dir/ckpt.pt)
    time_limit_s: float = 0.0          # stop, with a checkpoint, after this many seconds of the loop (0: none)
    # data
    dataset: str = "fineweb_edu"       # a folder of data/; fineweb_edu downloads: see data/README.md
    gradient_accumulation_steps: int = 40  # micro-batches per optimizer step
    batch_size: int = 12               # micro-batch size
    # model (see model.GPTConfig)
    block_size: int = 1024             # the context: tokens the model sees at once
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False
    attn: str = "sp"                   # the attention pattern: sp, dense, ... (README: attention patterns)
    attn_backend: str = "auto"         # sparse band patterns: auto (Triton on CUDA), triton, flex, torch
    attn_switch_frac: float = 0.0      # train the last fraction of max_iters with attn='dense' (same weights)
    # AdamW
    learning_rate: float = 6e-4
    max_iters: int = 600000
    weight_decay: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0             # 0 disables clipping
    # learning-rate schedule: linear warmup, then cosine decay to min_lr at lr_decay_iters
    decay_lr: bool = True
    warmup_iters: int = 2000
    lr_decay_iters: int = 600000
    min_lr: float = 6e-5
    # system
    device: str = "auto"               # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
    dtype: str = "auto"                # 'auto' (bf16 on CUDA when supported), 'float32', 'bfloat16', 'float16'
    compile: bool = True               # torch.compile the model (CUDA only; ignored elsewhere)
    compile_mode: str = "default"      # torch.compile's mode; 'reduce-overhead' replays each step as CUDA graphs
    seed: int = 1337
    peak_flops: float = 0.0            # for MFU; 0 = look the GPU up by name


# -----------------------------------------------------------------------------
# The run

def train(cfg):
    """Run the training loop of `cfg`; returns the list of (iter, train loss) it logged."""
    check_config(cfg)                  # every setting first: a mistake costs no waiting
    ckpt_path = os.path.join(cfg.out_dir, "ckpt.pt")
    ckpt = open_out_dir(cfg, ckpt_path)  # the checkpoint a resume continues (None from scratch), checked
    env = setup_process(cfg)           # device, precision, DDP
    console = Console(enabled=env.master)
    splits, meta = load_data(cfg, env)
    if env.master:
        os.makedirs(cfg.out_dir, exist_ok=True)
    run = build_run(cfg, env, meta, ckpt, ckpt_path)  # model and optimizer: fresh, or resumed from ckpt
    del ckpt  # the run holds what it needs of it
    raw_model, block_size = run.model, run.model.config.block_size
    dense_pairs = block_size * (block_size + 1) / 2 * raw_model.config.n_head
    console.say(f"model: {raw_model.get_num_params() / 1e6:.2f}M parameters, attn={raw_model.attn}, "
                f"{raw_model.attention_pairs() / dense_pairs:.1%} of dense causal attention pairs; "
                f"device {env.device}, {env.dtype}")
    ignored = ignored_on_resume(cfg, run) if cfg.init_from == "resume" else []
    if ignored:  # a resumed run keeps the architecture it was trained with
        console.say("resumed: the model is the checkpoint's; settings that differ from it are not used: "
                    + ", ".join(ignored))
    if env.device_type == "cpu" and env.master and not cfg.eval_only:  # will this take hours? say so now
        hint = slow_cpu_hint(cfg, env.world, time_forward(raw_model, splits["train"], cfg, env),
                             cfg.max_iters - run.iter_num)
        if hint:
            console.say(hint)
    if cfg.compile and cfg.compile_mode == "reduce-overhead" and env.device_type == "cuda":
        warm_up(raw_model, splits["train"], cfg, env)
    model = wrap_model(raw_model, cfg, env, console)  # what the loop calls: compiled, DDP
    # attn_switch_frac: from this iteration on the model attends densely; a resumed run goes on with the
    # attention its checkpoint was saved with, so it switches at the same point (model_args keep the
    # pattern it was built with, the checkpoint's "attn" the one in use).
    switch_iter = cfg.max_iters - round(cfg.attn_switch_frac * cfg.max_iters) if cfg.attn_switch_frac > 0 else None
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * block_size
    history, t_start, step_s = [], time.time(), 0.0
    pending = None  # the step queued last, whose loss is not read yet
    evaluated = False
    elapsed_before = run.elapsed_s  # the loop's seconds in the processes before a resume

    def elapsed():
        return elapsed_before + time.time() - t_start

    def read_pending():
        """Read the pending step's loss (this waits for the device to finish that step), stop on a NaN,
        and log the step. Called once the next step is queued, so that the device has work while the
        host waits here, and before anything that needs good weights: an evaluation, a checkpoint."""
        nonlocal pending, step_s
        if pending is None:
            return
        it, loss, grad_norm, lr, queued_s = pending
        t_wait = time.time()
        pending = None
        loss, grad_norm = float(loss), float(grad_norm)
        dt = queued_s + time.time() - t_wait  # the loop's time on the step: queueing it, then waiting for it
        check_finite("loss", loss, it, ckpt_path)
        if not run.scaler.is_enabled():  # float16's scaler skips a step whose gradient overflowed
            # a finite loss with a NaN gradient made NaN weights, which a stop right now would save
            check_finite("gradient norm", grad_norm, it, ckpt_path)
        history.append((it, loss))
        step_s += dt
        if it % cfg.log_interval == 0:
            mfu = raw_model.estimate_mfu(cfg.batch_size * cfg.gradient_accumulation_steps // env.world, dt,
                                         peak_flops=cfg.peak_flops or None)
            console.say(f"iter {it}: loss {loss:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, "
                        f"{tokens_per_iter / dt:,.0f} tok/s, mfu {'n/a' if mfu is None else f'{mfu:.1%}'}, "
                        f"grad norm {grad_norm:.3f}")
            log.row(iter=it, train_loss=f"{loss:.5f}", lr=lr, ms_per_iter=f"{dt * 1000:.2f}",
                    tokens_per_s=f"{tokens_per_iter / dt:.0f}", mfu="" if mfu is None else f"{mfu:.4f}",
                    elapsed_s=f"{elapsed():.1f}", grad_norm=f"{grad_norm:.6g}")
        per_iter = step_s / len(history)
        console.progress(f"training: iter {it}/{cfg.max_iters}, {per_iter:.2f} s/iter",
                         per_iter * (cfg.max_iters - it - 1))

    log_path = os.path.join(cfg.out_dir, "log.csv") if env.master else None
    fresh = cfg.init_from == "scratch"  # a new run: a new log, not another run's
    try:
        with CtrlC(env) as ctrl_c, CsvLog(log_path, append=not fresh) as log:
            while True:
                lr = get_lr(run.iter_num, cfg)
                for group in run.optimizer.param_groups:
                    group["lr"] = lr
                if switch_iter is not None and run.iter_num >= switch_iter and raw_model.attn != "dense":
                    console.say(f"iter {run.iter_num}: attn_switch_frac={cfg.attn_switch_frac}: switching attention "
                                f"{raw_model.attn} -> dense for the last {cfg.max_iters - run.iter_num} iterations")
                    raw_model.set_attn("dense")
                    model = wrap_model(raw_model, cfg, env, console)  # a fresh compile for the new attention
                if env.master and 0 < cfg.time_limit_s < time.time() - t_start:
                    ctrl_c.request(f"time_limit_s={cfg.time_limit_s:g}")  # stop() tells the other processes
                if ctrl_c.stop():  # here, between iterations, the state is whole
                    read_pending()
                    run.elapsed_s = elapsed()
                    save_on_stop(run, cfg, env, ckpt_path, console, ctrl_c.why)
                    break
                if run.iter_num % cfg.eval_interval == 0 or run.iter_num >= cfg.max_iters or cfg.eval_only:
                    read_pending()
                    losses = evaluate(model, splits, block_size, cfg, env, ctrl_c, console)
                    if losses is None:
                        continue  # Ctrl-C cut the evaluation short: the check above saves and stops
                    console.say(f"step {run.iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                    evaluated = True
                    log.row(iter=run.iter_num, train_loss=f"{losses['train']:.5f}", val_loss=f"{losses['val']:.5f}",
                            lr=lr, elapsed_s=f"{elapsed():.1f}")
                    for split, loss in losses.items():
                        check_finite(f"evaluation {split} loss", loss, run.iter_num, ckpt_path)
                    run.best_val_loss = min(run.best_val_loss, losses["val"])
                    if not cfg.eval_only:
                        run.elapsed_s = elapsed()
                        checkpoint(run, cfg, env, ckpt_path)
                if cfg.eval_only or run.iter_num >= cfg.max_iters:
                    break

                t0 = time.time()
                loss, grad_norm = train_step(model, run, splits["train"], cfg, env)
                queued_s = time.time() - t0
                read_pending()  # the previous step's loss, while the device works on this one
                pending = (run.iter_num, loss, grad_norm, lr, queued_s)
                run.iter_num += 1
    except KeyboardInterrupt:  # a second Ctrl-C (see CtrlC): stop at once, and say what is on disk
        raise KeyboardInterrupt(f"Ctrl-C again: stopped at once, without saving; {saved(run, ckpt_path)}") from None
    finally:
        if env.ddp:
            # DDP's reference cycles keep the process group, and gloo's threads, alive past
            # destroy_process_group. Collecting them first means no gloo thread is still running
            # while the interpreter shuts down, which can abort the process.
            model = None
            gc.collect()
            dist.destroy_process_group()
    if cfg.eval_only:
        if evaluated:  # not after a Ctrl-C cut the evaluation short
            console.say(f"done: evaluated the checkpoint of iter {run.iter_num} (trained nothing)")
    else:
        console.say(f"done: {run.iter_num} iterations, best val loss {run.best_val_loss:.4f}, "
                    f"{time.time() - t_start:.0f} s; {saved(run, ckpt_path)}")
    return history


# -----------------------------------------------------------------------------
# Set-up: settings, device, data, model

def model_args_of(cfg, vocab_size):
    """The model's settings (the fields of model.GPTConfig) in the training config."""
    return dict(block_size=cfg.block_size, vocab_size=vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias, attn=cfg.attn, attn_backend=cfg.attn_backend)


def check_config(cfg):
    """Raise a ConfigError naming the first setting that cannot work. Only the settings themselves are
    read (no dataset, no device; for a resume, whether its checkpoint exists), so the mistake is
    reported before anything slow happens."""
    if cfg.init_from not in ("scratch", "resume"):
        raise ConfigError(f"init_from must be 'scratch' or 'resume', got {cfg.init_from!r}")
    ckpt_path = os.path.join(cfg.out_dir, "ckpt.pt")
    if cfg.init_from == "resume" and not os.path.exists(ckpt_path):
        raise no_checkpoint(ckpt_path)
    if cfg.eval_only and cfg.init_from != "resume":
        raise ConfigError("eval_only evaluates a trained model: add --init_from=resume (and the run's --out_dir)")
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got {cfg.dtype!r}")
    if not 0.0 <= cfg.attn_switch_frac <= 1.0:
        raise ConfigError(f"attn_switch_frac must be in [0, 1], got {cfg.attn_switch_frac}")
    if cfg.compile_mode not in COMPILE_MODES:
        raise ConfigError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {cfg.compile_mode!r}")
    if cfg.time_limit_s < 0:
        raise ConfigError(f"time_limit_s must be >= 0 (0: no limit), got {cfg.time_limit_s}")
    for key in ("batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
    # GPTConfig checks the model's settings (attn, sizes, n_embd % n_head, block_size >= n_head, ...).
    # The vocabulary comes with the dataset; any valid size gives the same verdict on the others.
    GPTConfig(**model_args_of(cfg, GPT2_VOCAB_SIZE))
    return cfg


@dataclass
class Env:
    """Where this process computes: its device and precision, and its place among DDP processes."""
    device: str                        # 'cpu', 'cuda:0', 'mps'
    device_type: str                   # 'cpu', 'cuda' or 'mps': what autocast and GradScaler take
    dtype: str                         # 'float32', 'bfloat16' or 'float16'
    autocast: object                   # `with env.autocast:` runs the model in dtype
    ddp: bool = False
    rank: int = 0
    world: int = 1                     # the number of processes

    @property
    def master(self):
        """The process that prints, logs and writes the checkpoint."""
        return self.rank == 0


def setup_process(cfg):
    """The Env of this process. Under torchrun (it sets RANK) it joins the process group first:
    NCCL between GPUs, gloo on CPU."""
    device = pick_device(cfg)
    check_backend(cfg, device.split(":")[0])
    ddp, rank, world = int(os.environ.get("RANK", -1)) != -1, 0, 1
    if ddp:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
        if cfg.gradient_accumulation_steps % world:
            raise ConfigError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be divisible "
                              f"by the {world} processes, which share each step's micro-batches")
    device_type = "cuda" if device.startswith("cuda") else device
    dtype = pick_dtype(cfg, device_type)
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device_type=device_type, dtype=ptdtype)
    torch.manual_seed(cfg.seed + rank)  # the same init everywhere (DDP copies rank 0's), own dropout
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Env(device, device_type, dtype, autocast, ddp, rank, world)


def pick_device(cfg):
    """cfg.device if this machine has it (else a ConfigError saying so); for 'auto' CUDA, MPS or the CPU."""
    if cfg.device != "auto":
        kind = cfg.device.split(":")[0]
        if kind == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={cfg.device!r} but this machine has no CUDA GPU (or this torch has no CUDA); "
                              "use --device=cpu or --device=auto")
        if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"device={cfg.device!r} but MPS is not available here; use --device=cpu or --device=auto")
        if kind not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"unknown device={cfg.device!r}; use auto, cpu, cuda, cuda:N or mps")
        return cfg.device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_backend(cfg, device_type):
    """A ConfigError if attn_backend cannot run where this run computes; checked before any data is read,
    rather than at the model's first call."""
    if cfg.attn not in BAND_PATTERNS or cfg.attn == "dense":  # the others never call band_attention
        return
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"  # Triton on the CPU, for tests: very slow
    if cfg.attn_backend == "triton" and device_type != "cuda" and not interpreted:
        raise ConfigError(f"attn_backend='triton' needs a CUDA GPU and this run is on {device_type}; "
                          "use --attn_backend=auto, which picks the PyTorch fallback there")
    if cfg.attn_backend == "flex" and device_type == "cpu" and not cfg.eval_only:
        raise ConfigError("attn_backend='flex' cannot train on the CPU (FlexAttention has no backward there); "
                          "use --attn_backend=auto, which picks the PyTorch fallback there")


def pick_dtype(cfg, device_type):
    """cfg.dtype; for 'auto' bfloat16 on a CUDA GPU that has it, float16 on an older one (with loss
    scaling, see GradScaler), float32 elsewhere."""
    if cfg.dtype != "auto":
        return cfg.dtype
    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def data_dir(dataset):
    return os.path.join(HERE, "data", dataset)


def load_data(cfg, env):
    """The dataset's splits and vocabulary. Under DDP the master alone prepares a missing dataset
    while the others wait, so no two processes write the same files."""
    if env.ddp and not env.master:
        dist.barrier()
    splits, meta = load_dataset(cfg.dataset, prepare=env.master)
    if env.ddp and env.master:
        dist.barrier()
    return splits, meta


def load_dataset(dataset, prepare=True):
    """The train/val token arrays (memory-mapped) and the char vocabulary if there is one; with
    `prepare`, a missing dataset that needs no download is prepared first."""
    d = data_dir(dataset)
    if not os.path.isdir(d):
        known = sorted(n for n in os.listdir(os.path.join(HERE, "data"))
                       if os.path.isfile(os.path.join(data_dir(n), "prepare.py")))
        raise ConfigError(f"unknown dataset {dataset!r}: there is no folder data/{dataset}; "
                          f"choose one of {', '.join(known)}")
    if prepare and not os.path.exists(os.path.join(d, "train.bin")) and dataset in OFFLINE_DATASETS:
        print(f"data/{dataset}/train.bin is missing: running data/{dataset}/prepare.py", flush=True)
        subprocess.run([sys.executable, os.path.join(d, "prepare.py")], check=True)
    for split in ("train", "val"):
        if not os.path.exists(os.path.join(d, f"{split}.bin")):
            raise ConfigError(f"dataset {dataset!r} is not prepared: data/{dataset}/{split}.bin is missing; "
                              f"prepare it with python data/{dataset}/prepare.py (data/README.md says what it "
                              f"downloads), or start with the data that ships here: {QUICK_START} "
                              f"(on a CPU: {CPU_QUICK_START})")
    meta = None
    if os.path.exists(os.path.join(d, "meta.pkl")):
        with open(os.path.join(d, "meta.pkl"), "rb") as f:
            meta = pickle.load(f)
    splits = {s: np.memmap(os.path.join(d, f"{s}.bin"), dtype=np.uint16, mode="r") for s in ("train", "val")}
    return splits, meta


@dataclass
class Run:
    """The state of a training run: what ckpt.pt holds, so that --init_from=resume continues exactly."""
    model: GPT                         # the model itself, not its compiled or DDP wrapper
    optimizer: torch.optim.Optimizer
    model_args: dict                   # GPTConfig's fields: the architecture
    meta: dict | None                  # the char vocabulary (None for GPT-2 BPE), for sample.py
    data_gen: torch.Generator          # draws the training batches: its state is the data order
    scaler: torch.amp.GradScaler       # float16's loss scale (a no-op otherwise): it adapts as training goes
    iter_num: int = 0
    best_val_loss: float = float("inf")
    saved_at: int | None = None        # iter_num of the last checkpoint this run wrote, if any
    elapsed_s: float = 0.0             # the training loop's seconds so far, over every resume (log.csv)


def open_out_dir(cfg, ckpt_path):
    """The checkpoint that a resumed run continues, or None for a run from scratch; read before the data,
    so that a mismatch costs no waiting. A run from scratch refuses an out_dir that holds a checkpoint,
    which it would replace; a resume refuses another dataset than the run's own."""
    if cfg.init_from == "scratch":
        if os.path.exists(ckpt_path):
            raise ConfigError(f"{ckpt_path} already holds a run: continue it with --init_from=resume, train this "
                              f"one into another --out_dir, or delete '{cfg.out_dir}' to start over")
        return None
    ckpt = load_checkpoint(ckpt_path)
    trained_on = ckpt.get("config", {}).get("dataset")
    if trained_on is not None and trained_on != cfg.dataset:
        raise ConfigError(f"{ckpt_path} was trained on dataset {trained_on!r}, not {cfg.dataset!r}: a resume "
                          f"continues on the run's own data (--dataset={trained_on}, or its config file)")
    return ckpt


def build_run(cfg, env, meta, ckpt, ckpt_path):
    """A fresh model and optimizer; or, given the checkpoint of a resumed run, its model and optimizer
    together with its iteration, best val loss, data order and every process's dropout RNG."""
    model_args = model_args_of(cfg, meta["vocab_size"] if meta else GPT2_VOCAB_SIZE)
    if ckpt is not None:
        # the architecture must be the one that was trained; the rest (lr, max_iters...) may change
        model_args = {**ckpt["model_args"], "dropout": cfg.dropout, "attn_backend": cfg.attn_backend}
    model = GPT(GPTConfig(**model_args)) if ckpt is None else model_of_checkpoint(ckpt, model_args, ckpt_path)
    model.to(env.device)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                           env.device_type)
    # the training batches of every process, all alike; checkpointed
    run = Run(model, optimizer, model_args, meta, data_gen=torch.Generator().manual_seed(cfg.seed),
              scaler=torch.amp.GradScaler(env.device_type, enabled=(env.dtype == "float16")))
    if ckpt is None:
        return run
    optimizer.load_state_dict(ckpt["optimizer"])
    if run.scaler.is_enabled() and ckpt.get("scaler"):  # empty when the run was not float16
        run.scaler.load_state_dict(ckpt["scaler"])
    run.data_gen.set_state(ckpt["data_rng_state"])
    run.iter_num, run.best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
    run.elapsed_s = ckpt.get("elapsed_s", 0.0)  # absent in checkpoints written before it was kept
    if len(ckpt["rng_states"]) != env.world:
        raise ConfigError(f"{ckpt_path} was written by {len(ckpt['rng_states'])} process(es): resume it with "
                          f"as many (torchrun --nproc_per_node={len(ckpt['rng_states'])}, or plain python for 1)")
    cpu_state, cuda_state = ckpt["rng_states"][env.rank]  # each process's dropout stream goes on
    torch.set_rng_state(cpu_state)
    if env.device_type == "cuda" and cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state)
    return run


def ignored_on_resume(cfg, run):
    """The model settings of cfg that differ from the resumed checkpoint's architecture, which is used."""
    given = model_args_of(cfg, run.model_args["vocab_size"])
    return [f"{k}={given[k]} (checkpoint: {v})" for k, v in run.model_args.items() if k in given and given[k] != v]


def wrap_model(model, cfg, env, console):
    """The model as the loop calls it: compiled on CUDA (cfg.compile) and, under DDP, wrapped so that
    backward averages the gradients of all processes."""
    if cfg.compile and env.device_type == "cuda":
        console.say("compiling the model (takes a minute)...")
        # reduce-overhead records the compiled forward and backward as CUDA graphs and replays them: a
        # small model's step is otherwise bound by the host launching its kernels one by one
        model = torch.compile(model, mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
    if env.ddp:
        model = DDP(model, device_ids=[torch.cuda.current_device()] if env.device_type == "cuda" else None)
    return model


def fixed_batch(model, data, cfg, env):
    """One micro-batch of `data` drawn by its own seeded generator: the run's data order is untouched."""
    block_size = model.config.block_size
    ix = sample_starts(data, block_size, cfg.batch_size, torch.Generator().manual_seed(0))
    return get_batch(data, ix, block_size, env.device)


def warm_up(model, data, cfg, env):
    """One forward and backward of a micro-batch, gradients and random state left as they were. The
    band kernel makes small tables on the GPU at its first call for a shape (its schedule) and keeps
    them; CUDA graphs (compile_mode='reduce-overhead') own every allocation made while they record,
    and refuse tensors that outlive a step, so those first calls must happen before."""
    X, Y = fixed_batch(model, data, cfg, env)
    with torch.random.fork_rng(devices=[env.device]), env.autocast:
        model(X, Y)[1].backward()
    model.zero_grad(set_to_none=True)


def time_forward(model, data, cfg, env):
    """Seconds of one forward pass of a micro-batch, without gradients, in eval mode: no dropout, so
    the random stream (and an exact resume) is left alone. A first pass on one sequence takes the
    one-time costs (memory, lazy set-up) out of the measured ones; the median of three passes, since
    one pass on a busy machine can take several times the usual."""
    X, Y = fixed_batch(model, data, cfg, env)
    model.eval()
    seconds = []
    with torch.no_grad(), env.autocast:
        model(X[:1], Y[:1])
        for _ in range(3):
            t0 = time.time()
            model(X, Y)
            seconds.append(time.time() - t0)
    model.train()
    return sorted(seconds)[1]


def slow_cpu_hint(cfg, world, forward_s, iters_left):
    """A line when this run will obviously take hours, naming the CPU config unless the run already has
    that config's sizes, else None. A training step runs a forward and a backward (about twice the
    forward's work) on each of its micro-batches, an evaluation 2 * eval_iters forwards, so at
    forward_s a forward the run needs at least about this."""
    forwards = (3 * cfg.gradient_accumulation_steps * iters_left
                + 2 * cfg.eval_iters * (iters_left // cfg.eval_interval + 1)) / world
    hours = forward_s * forwards / 3600
    if hours < 1:
        return None
    hint = f"hint: at {forward_s:.1f} s per forward pass this run needs {int(hours)}+ hours on this CPU"
    quick = parse_args([os.path.join(HERE, CPU_QUICK_START.split()[-1])])
    if all(getattr(cfg, k) == getattr(quick, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size")):
        return hint + " (is something else keeping it busy?)"
    return hint + f"; to watch a model learn in minutes here, run: {CPU_QUICK_START}"


# -----------------------------------------------------------------------------
# The loop's steps

def get_lr(it, cfg):
    """The learning rate of iteration it: linear warmup over warmup_iters, cosine decay from
    learning_rate to min_lr at lr_decay_iters, then min_lr."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def sample_starts(data, block_size, n, generator):
    """n random start offsets of block_size + 1 token windows."""
    if len(data) <= block_size:
        raise ConfigError(f"a data split has {len(data)} tokens, fewer than block_size + 1 = {block_size + 1}")
    return torch.randint(len(data) - block_size, (n,), generator=generator)


def get_batch(data, ix, block_size, device):
    """Inputs and next-token targets (len(ix), block_size) of the windows starting at ix."""
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
    if device.startswith("cuda"):
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def train_step(model, run, data, cfg, env):
    """One optimizer step on a global batch of gradient_accumulation_steps micro-batches, of which this
    process takes its share. Returns the global batch's mean loss and the gradient norm, as tensors
    that the device may still be computing (reading them waits for it)."""
    block_size, B = run.model.config.block_size, cfg.batch_size
    accum = cfg.gradient_accumulation_steps // env.world  # micro-batches of this process
    # The step's micro-batches are drawn together; process r takes the r-th share of them.
    ix = sample_starts(data, block_size, cfg.gradient_accumulation_steps * B, run.data_gen)
    total = torch.zeros((), device=env.device)
    for micro in range(accum):
        first = (env.rank * accum + micro) * B
        X, Y = get_batch(data, ix[first:first + B], block_size, env.device)
        if env.ddp:  # all-reduce the gradients once, in the last micro-step's backward
            model.require_backward_grad_sync = micro == accum - 1
        torch.compiler.cudagraph_mark_step_begin()  # with CUDA graphs: the last step's outputs are done with
        with env.autocast:
            _, loss = model(X, Y)
            # this process's mean; DDP averages the processes' gradients: the global mean
            loss = loss / accum
        run.scaler.scale(loss).backward()
        total += loss.detach()
    if env.ddp:
        dist.all_reduce(total)
        total /= env.world  # the global batch's mean loss
    run.scaler.unscale_(run.optimizer)  # a no-op unless fp16 loss scaling is on
    # the norm is logged also without clipping (an infinite bound clips nothing)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    return total, grad_norm


def check_finite(what, value, iter_num, ckpt_path):
    """Stop on a NaN or infinite loss (or gradient norm), before a checkpoint could save the weights
    that made it."""
    if not math.isfinite(value):
        raise FloatingPointError(
            f"{what} became {value} at iter {iter_num}; stopped without saving. The last good checkpoint "
            f"is kept in {ckpt_path}. Try a lower learning_rate, grad_clip, or dtype=float32")


@torch.no_grad()
def evaluate(model, splits, block_size, cfg, env, ctrl_c, console):
    """The mean loss of eval_iters batches of each split; None when Ctrl-C cut the evaluation short.

    The same batches at every evaluation (a generator seeded afresh): curves compare like with like,
    and evaluating does not disturb the training data order. Under DDP process r evaluates batches
    r, r + world, ... and the sums are all-reduced: the same mean for 1/world of the work."""
    m = model.module if env.ddp else model  # not DDP's forward: it syncs, and the shares can differ by one
    m.eval()
    losses, started, total = {}, time.time(), 2 * cfg.eval_iters
    try:
        for s, split in enumerate(("train", "val")):
            gen = torch.Generator().manual_seed(cfg.seed + 1)
            batch_losses = torch.zeros(cfg.eval_iters, device=env.device)
            for k in range(cfg.eval_iters):
                if k % env.world == 0 and ctrl_c.stop():  # every process asks at the same k
                    return None
                ix = sample_starts(splits[split], block_size, cfg.batch_size, gen)  # keeps gen in step
                if k % env.world != env.rank:
                    continue
                X, Y = get_batch(splits[split], ix, block_size, env.device)
                torch.compiler.cudagraph_mark_step_begin()
                with env.autocast:
                    _, loss = m(X, Y)
                batch_losses[k] = loss.float()
                done = s * cfg.eval_iters + k + 1
                console.progress(f"evaluating: batch {done}/{total}",
                                 (time.time() - started) / done * (total - done))
            if env.ddp:
                dist.all_reduce(batch_losses)
            losses[split] = batch_losses.mean().item()
    finally:
        m.train()
    return losses


# -----------------------------------------------------------------------------
# Checkpoints

def checkpoint(run, cfg, env, path):
    """Write everything resume needs to path (the master does). Every process's RNG state (dropout) is
    gathered first: a collective, so under DDP all processes call this at the same point."""
    rng_states = [(torch.get_rng_state(), torch.cuda.get_rng_state() if env.device_type == "cuda" else None)]
    if env.ddp:
        mine, rng_states = rng_states[0], [None] * env.world
        dist.all_gather_object(rng_states, mine)
    if env.master:
        save_checkpoint(path, {
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),
            "model_args": run.model_args, "config": dataclasses.asdict(cfg), "iter_num": run.iter_num,
            "best_val_loss": float(run.best_val_loss), "data_rng_state": run.data_gen.get_state(),
            "rng_states": rng_states, "meta": run.meta, "elapsed_s": run.elapsed_s,
            "attn": run.model.attn,  # model_args keep the pattern it was built with (attn_switch_frac)
        })
    run.saved_at = run.iter_num


def saved(run, path):
    """What this run left on disk, in words."""
    return f"checkpoint of iter {run.saved_at} in {path}" if run.saved_at is not None else "no checkpoint written"


def save_on_stop(run, cfg, env, path, console, why="Ctrl-C"):
    """After Ctrl-C (or the time limit, `why`): a checkpoint of the whole state, or a line that says why
    there is nothing to save."""
    if cfg.eval_only:
        console.say(f"{why}: stopped; eval_only trains nothing, so there is nothing to save")
    elif run.iter_num == 0:
        console.say(f"{why}: stopped before the first training step: nothing to save")
    else:
        checkpoint(run, cfg, env, path)
        console.say(f"{why}: saved {path} at iter {run.iter_num}; continue with --init_from=resume")


def save_checkpoint(path, state):
    """Write to a temporary file, then rename: a crash or a Ctrl-C mid-write never leaves a broken
    ckpt.pt (the rename replaces the old file in one step), nor a stray temporary file."""
    tmp = path + ".tmp"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, map_location="cpu"):
    if not os.path.exists(path):
        raise no_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ConfigError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); "
                          "it may be truncated or from another program") from None
    model_args = ckpt.get("model_args") if isinstance(ckpt, dict) else None
    if not isinstance(model_args, dict) or "model" not in ckpt or "attn" not in model_args:
        raise ConfigError(f"{path} is not a checkpoint of this project (no model / model_args / attention pattern "
                          "in it; nanoGPT's own checkpoints do not load here)")
    return ckpt


def model_of_checkpoint(ckpt, model_args, path):
    """The checkpoint's GPT with its weights, built from model_args (the checkpoint's, with this run's
    dropout and attention backend), attending with the pattern it was last trained with."""
    try:
        model = GPT(GPTConfig(**model_args))
        model.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError) as e:  # another program's config keys, or weights of another shape
        what = " ".join(line.strip() for line in str(e).strip().splitlines()[:2])
        raise ConfigError(f"{path}: its model does not fit this project's GPT ({what[:300]})") from None
    attn = ckpt.get("attn", model.attn)  # absent in checkpoints written before it was kept
    if attn != model.attn:
        model.set_attn(attn)
    return model


def no_checkpoint(path):
    return ConfigError(f"no checkpoint at {path}: train first (python train.py ...) or check --out_dir")


# -----------------------------------------------------------------------------
# Ctrl-C, the console and log.csv

class CtrlC:
    """`with CtrlC(env) as ctrl_c:` makes Ctrl-C (SIGINT) a request: the loop asks ctrl_c.stop() where
    the state is whole (between iterations, between evaluation batches) and then saves a checkpoint. A
    second Ctrl-C raises KeyboardInterrupt wherever the run is, for a user who will not wait."""

    def __init__(self, env):
        self.env, self.requested, self.why = env, False, "Ctrl-C"

    def request(self, why):
        """Ask the loop to stop as Ctrl-C does, for another reason (the time limit), named in its message."""
        self.requested, self.why = True, why

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self.on_sigint)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)

    def on_sigint(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.env.master:
            # on stderr: the run prints on stdout, and a print interrupted by this one would fail
            print("\nCtrl-C: stopping after this training step or evaluation batch "
                  "(Ctrl-C again to quit at once, without saving)", file=sys.stderr, flush=True)

    def stop(self):
        """Whether to stop here. Under DDP every process calls this at the same point and all stop if
        any got Ctrl-C: a terminal sends it to every process, but not at the same instant."""
        if self.env.ddp:
            flag = torch.tensor(float(self.requested), device=self.env.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.requested = bool(flag.item())
        return self.requested


class Console:
    """What the run prints: log lines, and during a long wait (an evaluation, the iterations between
    two log lines) a progress line with the time left, so that a slow machine never looks stuck.
    On a terminal the progress line appears after a second of silence and is rewritten in place (\\r),
    then erased by the next log line; in a file or a pipe it is a plain line after QUIET_S seconds
    of silence, so a log stays short. Only the master process prints (enabled)."""
    QUIET_S = 5.0

    def __init__(self, enabled):
        self.enabled, self.tty = enabled, sys.stdout.isatty()
        self.last_output = time.time()
        self.width = 0  # characters of the progress line on the terminal now; 0: none shown

    def say(self, text):
        if not self.enabled:
            return
        if self.width:
            print("\r" + " " * self.width + "\r", end="")
            self.width = 0
        print(text, flush=True)
        self.last_output = time.time()

    def progress(self, text, seconds_left):
        wait = (0.25 if self.width else 1.0) if self.tty else self.QUIET_S
        if not self.enabled or time.time() - self.last_output < wait:
            return
        text = f"{text}, about {duration(seconds_left)} left"
        if self.tty:
            print("\r" + text.ljust(self.width), end="", flush=True)
            self.width = max(self.width, len(text))
        else:
            print(text, flush=True)
        self.last_output = time.time()


def duration(seconds):
    """'2h05m', '3m20s' or '12s'."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class CsvLog:
    """out_dir/log.csv: a row per logged iteration and per evaluation. A run from scratch starts the file
    afresh (a second run in the same out_dir would otherwise mix its rows with the first one's); a resumed
    run appends, continuing it. `with CsvLog(None)` writes nothing (DDP processes but the master)."""
    COLUMNS = ["iter", "train_loss", "val_loss", "lr", "ms_per_iter", "tokens_per_s", "mfu", "elapsed_s",
               "grad_norm"]

    def __init__(self, path, append=True):
        self.file = open(path or os.devnull, "a" if append else "w", newline="")
        self.writer = csv.DictWriter(self.file, self.COLUMNS, restval="")
        if self.file.tell() == 0:
            self.writer.writeheader()

    def row(self, **values):
        self.writer.writerow(values)
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


# -----------------------------------------------------------------------------
# Command line

USAGE = "usage: python train.py [config/NAME.py ...] [--key=value ...]"


def parse_value(key, text, typ):
    """The command-line text of --key=value as type typ, or a ConfigError naming the key."""
    if typ is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"--{key} expects True or False, got {text!r}")
    try:
        return typ(text)
    except ValueError:
        raise ConfigError(f"--{key} expects {typ.__name__}, got {text!r}") from None


def _check_type(key, value, typ, where):
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not typ:
        raise ConfigError(f"{where}: {key} must be {typ.__name__}, got {value!r} ({type(value).__name__})")
    return value


def parse_args(argv):
    """TrainConfig from nanoGPT-style arguments: config files, then --key=value overrides."""
    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    values = {}
    for arg in argv:
        if not arg.startswith("--"):
            if not os.path.isfile(arg):
                raise ConfigError(f"config file {arg!r} not found (expected a path like config/train_shakespeare_char.py)")
            scope = {}
            exec(compile(open(arg).read(), arg, "exec"), scope)
            for key, value in scope.items():
                if key.startswith("_") or type(value).__name__ == "module" or callable(value):
                    continue  # imports and helpers a config file may use
                if key not in fields:
                    raise ConfigError(f"{arg}: unknown config key {key!r}; known keys: {', '.join(fields)}")
                values[key] = _check_type(key, value, fields[key], arg)
        else:
            key, eq, text = arg[2:].partition("=")
            if not eq:
                raise ConfigError(f"argument {arg!r} must look like --key=value (--help lists the keys)")
            if key not in fields:
                raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(fields)}")
            values[key] = parse_value(key, text, fields[key])
    return check_config(TrainConfig(**values))


def option_line(name, default, text):
    """One line of a --help listing: --name=default, its type, what it does (a tuple is a list: a,b,c)."""
    shown = repr(default) if isinstance(default, str) and not default.isprintable() else default
    kind = type(default).__name__
    if isinstance(default, tuple):
        shown, kind = ",".join(str(v) for v in default), "list"
    return f"    {f'--{name}={shown}':<36} {kind:<6} {text}".rstrip()


def usage():
    """The --help text: the usage line, then every setting of TrainConfig (settings_help)."""
    return "\n".join([USAGE, "",
                      "Config files (plain Python assignments) and then --key=value set the settings below;",
                      f"a later one wins. Start with: {QUICK_START}", f"or, on a CPU: {CPU_QUICK_START}", "",
                      "settings (default, type):", settings_help(TrainConfig)])


def settings_help(cls):
    """Every field of the dataclass cls in its order, with its default, type and the comment it has in
    the source (read from there, so the two never differ); comment lines become group headings."""
    lines, fields = [], {f.name: f for f in dataclasses.fields(cls)}
    for line in inspect.getsource(cls).splitlines():
        code, _, comment = line.strip().partition("#")
        name = code.split(":")[0].strip()
        if not code:  # a comment line: the heading of a group of settings
            lines.append(f"  {comment.strip()}")
        elif name in fields:
            lines.append(option_line(name, fields[name].default, comment.strip()))
    return "\n".join(lines)


def print_help(text):
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `--help | head`: the reader took what it wanted and left
        stdout_gone()


def stdout_gone():
    """After a BrokenPipeError: point stdout at /dev/null, so that the flush at exit fails quietly."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv):
    if "-h" in argv or "--help" in argv:
        print_help(usage())
        return
    try:
        train(parse_args(argv))
    except (ConfigError, FloatingPointError) as e:
        sys.stderr.write(f"error: {e}\n")  # one write: torchrun's processes each print it, whole lines
        sys.exit(1)
    except KeyboardInterrupt as e:  # before training began, or a second Ctrl-C (train says what is kept)
        print(f"\n{e or 'Ctrl-C: stopped before training began; nothing was saved'}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
