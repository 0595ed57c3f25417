"""
Train a GPT with SPAttention, nanoGPT style.

    python train.py                                   # defaults below (GPT-2 small shape)
    python train.py config/train_shakespeare_char.py  # a config file: plain Python assignments
    python train.py config/train_shakespeare_char.py --attn=dense --max_iters=2000
    torchrun --standalone --nproc_per_node=2 train.py config/train_shakespeare_char.py   # 2 GPUs, DDP

Every setting is a field of TrainConfig; a config file or --key=value may set any of them, and an
unknown key or a value of the wrong type stops with a message saying so. The checkpoint
out_dir/ckpt.pt always holds the latest state (written atomically), so --init_from=resume continues
exactly where a run stopped, after the last iteration, an evaluation, or Ctrl-C.

Under torchrun every process takes its share of each step's micro-batches (gradient_accumulation_steps
must divide by the number of processes), so N processes train on the same global batches, in the
same order, as one process does.
"""

import csv
import dataclasses
import gc
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

from model import GPT, GPTConfig, ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
# Datasets whose prepare.py needs no download: train.py prepares these by itself when needed.
OFFLINE_DATASETS = ("shakespeare_char", "shakespeare", "pystdlib")


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out"
    eval_interval: int = 2000
    log_interval: int = 1
    eval_iters: int = 200
    eval_only: bool = False
    init_from: str = "scratch"         # 'scratch' or 'resume' (from out_dir/ckpt.pt)
    # data
    dataset: str = "openwebtext"
    gradient_accumulation_steps: int = 40
    batch_size: int = 12               # micro-batch size
    # model (see model.GPTConfig)
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False
    attn: str = "sp"
    attn_backend: str = "auto"         # band patterns: auto (Triton on CUDA), triton, flex, torch
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
    seed: int = 1337
    peak_flops: float = 0.0            # for MFU; 0 = look the GPU up by name


# -----------------------------------------------------------------------------
# Command line

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
                raise ConfigError(f"argument {arg!r} must look like --key=value")
            if key not in fields:
                raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(fields)}")
            values[key] = parse_value(key, text, fields[key])
    cfg = TrainConfig(**values)
    if cfg.init_from not in ("scratch", "resume"):
        raise ConfigError(f"init_from must be 'scratch' or 'resume', got {cfg.init_from!r}")
    if cfg.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got {cfg.dtype!r}")
    if not 0.0 <= cfg.attn_switch_frac <= 1.0:
        raise ConfigError(f"attn_switch_frac must be in [0, 1], got {cfg.attn_switch_frac}")
    for key in ("batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
    return cfg


# -----------------------------------------------------------------------------
# Data

def data_dir(dataset):
    return os.path.join(HERE, "data", dataset)


def load_dataset(dataset, prepare=True):
    """The train/val token arrays (memory-mapped) and the char vocabulary if there is one; with
    `prepare`, a missing dataset that needs no download is prepared first."""
    d = data_dir(dataset)
    if prepare and not os.path.exists(os.path.join(d, "train.bin")) and dataset in OFFLINE_DATASETS:
        print(f"data/{dataset}/train.bin is missing: running data/{dataset}/prepare.py")
        subprocess.run([sys.executable, os.path.join(d, "prepare.py")], check=True)
    for split in ("train", "val"):
        if not os.path.exists(os.path.join(d, f"{split}.bin")):
            raise ConfigError(f"dataset {dataset!r} is not prepared: data/{dataset}/{split}.bin is missing; "
                              f"run python data/{dataset}/prepare.py")
    meta = None
    if os.path.exists(os.path.join(d, "meta.pkl")):
        with open(os.path.join(d, "meta.pkl"), "rb") as f:
            meta = pickle.load(f)
    splits = {s: np.memmap(os.path.join(d, f"{s}.bin"), dtype=np.uint16, mode="r") for s in ("train", "val")}
    return splits, meta


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


# -----------------------------------------------------------------------------
# Checkpoints

def save_checkpoint(path, state):
    """Write to a temporary file, then rename: a crash mid-write never leaves a broken ckpt.pt."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    if not os.path.exists(path):
        raise ConfigError(f"no checkpoint at {path}: train first (python train.py ...) or check --out_dir")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ConfigError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); "
                          "it may be truncated or from another program") from None
    if not isinstance(ckpt, dict) or not {"model", "model_args"} <= set(ckpt):
        raise ConfigError(f"{path} is not a checkpoint of this project (no model / model_args in it)")
    return ckpt


# -----------------------------------------------------------------------------
# Training

def get_lr(it, cfg):
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def pick_device(cfg):
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


def pick_dtype(cfg, device_type):
    if cfg.dtype != "auto":
        return cfg.dtype
    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def train(cfg):
    """Run the training loop of `cfg`; returns the list of (iter, train loss) it logged."""
    device = pick_device(cfg)
    # Distributed data parallel when started by torchrun (it sets RANK): NCCL between GPUs, gloo on CPU.
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, world = 0, 1
    if ddp:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
        if cfg.gradient_accumulation_steps % world:
            raise ConfigError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be divisible "
                              f"by the {world} processes, which share each step's micro-batches")
    master = rank == 0
    accum = cfg.gradient_accumulation_steps // world  # micro-batches of this process per step
    say = print if master else (lambda *args, **kwargs: None)
    device_type = "cuda" if device.startswith("cuda") else device
    dtype = pick_dtype(cfg, device_type)
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type=device_type, dtype=ptdtype)
    torch.manual_seed(cfg.seed + rank)  # the same init everywhere (DDP copies rank 0's), own dropout
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if master:
        os.makedirs(cfg.out_dir, exist_ok=True)
    ckpt_path = os.path.join(cfg.out_dir, "ckpt.pt")

    if ddp and not master:
        dist.barrier()  # the master prepares a missing dataset, alone
    splits, meta = load_dataset(cfg.dataset, prepare=master)
    if ddp and master:
        dist.barrier()
    vocab_size = meta["vocab_size"] if meta else 50304  # GPT-2's 50257 padded to a multiple of 64
    model_args = dict(block_size=cfg.block_size, vocab_size=vocab_size, n_layer=cfg.n_layer,
                      n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias, attn=cfg.attn,
                      attn_backend=cfg.attn_backend)
    data_gen = torch.Generator().manual_seed(cfg.seed)  # the training batches of every process, checkpointed
    iter_num, best_val_loss, ckpt = 0, float("inf"), None
    if cfg.init_from == "resume":
        ckpt = load_checkpoint(ckpt_path)
        # the architecture must be the one that was trained; the rest (lr, max_iters...) may change
        model_args = {**ckpt["model_args"], "dropout": cfg.dropout, "attn_backend": cfg.attn_backend}
        iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
        data_gen.set_state(ckpt["data_rng_state"])
    model = GPT(GPTConfig(**model_args))
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    block_size = model.config.block_size
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device_type)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if len(ckpt["rng_states"]) != world:
            raise ConfigError(f"{ckpt_path} was written by {len(ckpt['rng_states'])} process(es): resume it with "
                              f"as many (torchrun --nproc_per_node={len(ckpt['rng_states'])}, or plain python for 1)")
        cpu_state, cuda_state = ckpt["rng_states"][rank]  # each process's dropout stream goes on
        torch.set_rng_state(cpu_state)
        if device_type == "cuda" and cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state)
        ckpt = None  # free memory
    say(f"model: {model.get_num_params() / 1e6:.2f}M parameters, attn={model.config.attn}, "
        f"{model.attention_pairs() / (block_size * (block_size + 1) / 2 * model.config.n_head):.1%} of dense "
        f"causal attention pairs; device {device}, {dtype}")

    def wrap(m):
        if cfg.compile and device_type == "cuda":
            say("compiling the model (takes a minute)...")
            m = torch.compile(m)
        return DDP(m, device_ids=[torch.cuda.current_device()] if device_type == "cuda" else None) if ddp else m

    raw_model, model = model, wrap(model)
    # attn_switch_frac: from this iteration on the model attends densely. Decided from iter_num alone,
    # so a resumed run switches at the same point (model_args keep the pattern it was built with).
    switch_iter = cfg.max_iters - round(cfg.attn_switch_frac * cfg.max_iters) if cfg.attn_switch_frac > 0 else None

    def checkpoint():
        # every process's RNG state (dropout), gathered: a collective, so all processes call this
        rng_states = [(torch.get_rng_state(), torch.cuda.get_rng_state() if device_type == "cuda" else None)]
        if ddp:
            mine, rng_states = rng_states[0], [None] * world
            dist.all_gather_object(rng_states, mine)
        if master:
            save_checkpoint(ckpt_path, {
                "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "model_args": model_args, "config": dataclasses.asdict(cfg), "iter_num": iter_num,
                "best_val_loss": float(best_val_loss), "data_rng_state": data_gen.get_state(),
                "rng_states": rng_states, "meta": meta,
            })

    @torch.no_grad()
    def estimate_loss():
        # The same batches at every evaluation (a fixed generator): curves compare like with like,
        # and evaluating does not disturb the training data order. Under DDP process r evaluates
        # batches r, r + world, ... and the sums are all-reduced: the same mean for 1/world of the work.
        m = model.module if ddp else model  # not DDP's forward: it syncs, and the shares can differ by one
        m.eval()
        out = {}
        for split in ("train", "val"):
            gen = torch.Generator().manual_seed(cfg.seed + 1)
            losses = torch.zeros(cfg.eval_iters, device=device)
            for k in range(cfg.eval_iters):
                ix = sample_starts(splits[split], block_size, cfg.batch_size, gen)  # keeps gen in step
                if k % world != rank:
                    continue
                X, Y = get_batch(splits[split], ix, block_size, device)
                with ctx:
                    _, loss = m(X, Y)
                losses[k] = loss.float()
            if ddp:
                dist.all_reduce(losses)
            out[split] = losses.mean().item()
        m.train()
        return out

    # Ctrl-C asks to stop at the next iteration boundary, where the state is whole; a second one aborts.
    stop = {"requested": False}

    def on_sigint(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        say("\nCtrl-C: saving a checkpoint after this iteration (Ctrl-C again to abort without saving)")

    old_handler = signal.signal(signal.SIGINT, on_sigint)
    log = open(os.path.join(cfg.out_dir, "log.csv") if master else os.devnull, "a", newline="")
    writer = csv.writer(log)
    if log.tell() == 0:
        writer.writerow(["iter", "train_loss", "val_loss", "lr", "ms_per_iter", "tokens_per_s", "mfu", "elapsed_s",
                         "grad_norm"])
    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * block_size
    history, t_start = [], time.time()
    try:
        while True:
            lr = get_lr(iter_num, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if switch_iter is not None and iter_num >= switch_iter and raw_model.attn != "dense":
                say(f"iter {iter_num}: attn_switch_frac={cfg.attn_switch_frac}: switching attention "
                    f"{raw_model.attn} -> dense for the last {cfg.max_iters - iter_num} iterations")
                raw_model.set_attn("dense")
                model = wrap(raw_model)  # a fresh compile for the new attention
            if ddp:  # Ctrl-C reaches the processes at different moments: stop together
                flag = torch.tensor(float(stop["requested"]), device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop["requested"] = bool(flag.item())
            if stop["requested"]:
                checkpoint()
                say(f"saved {ckpt_path} at iter {iter_num}; continue with --init_from=resume")
                break
            if iter_num % cfg.eval_interval == 0 or iter_num >= cfg.max_iters:
                losses = estimate_loss()
                say(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                writer.writerow([iter_num, f"{losses['train']:.5f}", f"{losses['val']:.5f}", lr, "", "", "",
                                 f"{time.time() - t_start:.1f}", ""])
                log.flush()
                if not all(map(math.isfinite, losses.values())):
                    raise FloatingPointError(
                        f"evaluation loss became {losses} at iter {iter_num}; stopped without saving. The last "
                        f"good checkpoint is kept in {ckpt_path}. Try a lower learning_rate, grad_clip, or dtype=float32")
                best_val_loss = min(best_val_loss, losses["val"])
                if not cfg.eval_only:
                    checkpoint()
            if cfg.eval_only or iter_num >= cfg.max_iters:
                break

            t0 = time.time()
            # The step's micro-batches are drawn together; process r takes the r-th share of them.
            ix = sample_starts(splits["train"], block_size, cfg.gradient_accumulation_steps * cfg.batch_size, data_gen)
            total = torch.zeros((), device=device)
            for micro in range(accum):
                first = (rank * accum + micro) * cfg.batch_size
                X, Y = get_batch(splits["train"], ix[first:first + cfg.batch_size], block_size, device)
                if ddp:  # all-reduce the gradients once, in the last micro-step's backward
                    model.require_backward_grad_sync = micro == accum - 1
                with ctx:
                    _, loss = model(X, Y)
                    # this process's mean; DDP averages the processes' gradients: the global mean
                    loss = loss / accum
                scaler.scale(loss).backward()
                total += loss.detach()
            if ddp:
                dist.all_reduce(total)
                total /= world  # the global batch's mean loss
            total = float(total)  # waits for the GPU: the timing below covers the whole step
            if not math.isfinite(total):
                raise FloatingPointError(
                    f"loss became {total} at iter {iter_num}; stopped without saving. The last good "
                    f"checkpoint is kept in {ckpt_path}. Try a lower learning_rate, grad_clip, or dtype=float32")
            scaler.unscale_(optimizer)  # a no-op unless fp16 loss scaling is on
            # the norm is logged also without clipping (an infinite bound clips nothing)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            dt = time.time() - t0
            history.append((iter_num, total))
            if iter_num % cfg.log_interval == 0:
                mfu = raw_model.estimate_mfu(cfg.batch_size * accum, dt,
                                             peak_flops=cfg.peak_flops or None)
                mfu_text = f"{mfu * 100:.1f}%" if mfu is not None else "n/a"
                say(f"iter {iter_num}: loss {total:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, "
                    f"{tokens_per_iter / dt:,.0f} tok/s, mfu {mfu_text}, grad norm {float(grad_norm):.3f}")
                writer.writerow([iter_num, f"{total:.5f}", "", lr, f"{dt * 1000:.2f}", f"{tokens_per_iter / dt:.0f}",
                                 "" if mfu is None else f"{mfu:.4f}", f"{time.time() - t_start:.1f}",
                                 f"{float(grad_norm):.6g}"])
            iter_num += 1
    finally:
        signal.signal(signal.SIGINT, old_handler)
        log.close()
        if ddp:
            # DDP's reference cycles keep the process group, and gloo's threads, alive past
            # destroy_process_group until the interpreter exits, where they aborted about 1 CPU run in 15.
            model = None
            gc.collect()
            dist.destroy_process_group()
    say(f"done: {iter_num} iterations, best val loss {best_val_loss:.4f}, "
        f"{time.time() - t_start:.0f} s; checkpoint in {ckpt_path}")
    return history


def main(argv):
    try:
        cfg = parse_args(argv)
        train(cfg)
    except (ConfigError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
