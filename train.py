"""
Train a GPT with SPAttention, nanoGPT style.

    python train.py config/train_shakespeare_char.py      # start here: the baby GPT on Tiny Shakespeare
    python train.py config/train_shakespeare_char_cpu.py  # the same idea, small enough for a laptop CPU
    python train.py config/train_shakespeare_char.py --attn=dense --out_dir=out-shakespeare-char-dense
    python train.py                                       # the defaults: GPT-2 small on FineWeb-Edu
    python train.py --help                                # every setting, with its default
    torchrun --standalone --nproc_per_node=2 train.py config/train_shakespeare_char.py \
        --gradient_accumulation_steps=2 --out_dir=out-ddp                # 2 GPUs, DDP

Every setting is a field of TrainConfig, all checked before any data is read. out_dir/ckpt.pt always
holds the latest state (written atomically), so --init_from=resume continues exactly where a run
stopped: after the last iteration, an evaluation, Ctrl-C, or --time_limit_s. Under torchrun N processes
share each step's micro-batches: they train on the same batches, in the same order, as one process.

Reading order: TrainConfig, train() (set-up, then the loop on one screen), then what it calls, in that
order. The plumbing (command line, device, files on disk, console, Ctrl-C) is in utils.py.
"""

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from model import GPT, GPTConfig, ConfigError
from utils import (CPU_QUICK_START, DTYPES, GPT2_VOCAB_SIZE, QUICK_START, Console, CsvLog, CtrlC, Steps,
                   check_dataset, check_device, check_finite, end_process, load_checkpoint, load_data,
                   model_of_checkpoint, no_checkpoint, one_line_errors, parse_config, print_help, save_checkpoint,
                   settings_help, setup_process, slow_cpu_hint)

HERE = os.path.dirname(os.path.abspath(__file__))
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


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
    """Run the training of `cfg`; returns the (iter, train loss) of every step it trained."""
    check_config(cfg)                  # every setting first: a mistake costs no waiting
    ckpt = open_out_dir(cfg)           # the checkpoint a resume continues (None from scratch), checked
    env = setup_process(cfg)           # device, precision, DDP (utils.py)
    check_device(cfg, env)
    console = Console(enabled=env.master)
    splits, meta = load_data(cfg, env)
    if env.master:
        os.makedirs(cfg.out_dir, exist_ok=True)
    run = build_run(cfg, env, meta, ckpt)  # model and optimizer: fresh, or resumed from ckpt
    del ckpt  # the run holds what it needs of it
    introduce(run, cfg, env, console)
    if cfg.compile and cfg.compile_mode == "reduce-overhead" and env.device_type == "cuda":
        warm_up(run.model, splits["train"], cfg, env)
    model = wrap_model(run.model, cfg, env, console)  # what the loop calls: compiled, DDP
    # attn_switch_frac: from this iteration on the model attends densely; a resumed run goes on with the
    # attention its checkpoint was saved with, so it switches at the same point
    switch_iter = cfg.max_iters - round(cfg.attn_switch_frac * cfg.max_iters) if cfg.attn_switch_frac > 0 else None
    log_path = os.path.join(cfg.out_dir, "log.csv") if env.master else None
    evaluated, run.started = False, time.time()
    try:
        # a run from scratch starts a new log, not another run's; a resumed run continues its own
        with CtrlC(env) as ctrl_c, CsvLog(log_path, append=cfg.init_from == "resume") as log:
            steps = Steps(run, cfg, env, console, log, checkpoint_path(cfg))
            while True:
                lr = get_lr(run.iter_num, cfg)
                for group in run.optimizer.param_groups:
                    group["lr"] = lr
                if switch_iter is not None and run.iter_num >= switch_iter and run.model.attn != "dense":
                    model = switch_to_dense(run, cfg, env, console)
                if env.master and 0 < cfg.time_limit_s < time.time() - run.started:
                    ctrl_c.request(f"time_limit_s={cfg.time_limit_s:g}")  # stop() tells the other processes
                if ctrl_c.stop():  # here, between iterations, the state is whole
                    steps.read()
                    save_on_stop(run, cfg, env, console, ctrl_c.why)
                    break
                if run.iter_num % cfg.eval_interval == 0 or run.iter_num >= cfg.max_iters or cfg.eval_only:
                    steps.read()  # a NaN loss stops the run before a checkpoint saves its weights
                    evaluated = evaluate_and_checkpoint(model, splits, run, cfg, env, ctrl_c, console, log, lr)
                    if not evaluated:
                        continue  # Ctrl-C cut the evaluation short: the check above saves and stops
                if cfg.eval_only or run.iter_num >= cfg.max_iters:
                    break

                t0 = time.time()
                loss, grad_norm = train_step(model, run, splits["train"], cfg, env)
                steps.queued(run.iter_num, loss, grad_norm, lr, time.time() - t0)  # reads the step before
                run.iter_num += 1
    except KeyboardInterrupt:  # a second Ctrl-C (see CtrlC): stop at once, and say what is on disk
        raise KeyboardInterrupt(f"Ctrl-C again: stopped at once, without saving; {saved(run, cfg)}") from None
    finally:
        model = None  # the DDP wrapper, which end_process collects before it leaves the process group
        end_process(env)
    if cfg.eval_only:
        if evaluated:  # not after a Ctrl-C cut the evaluation short
            console.say(f"done: evaluated the checkpoint of iter {run.iter_num} (trained nothing)")
    else:
        best = f"best val loss {run.best_val_loss:.4f}" if run.best_val_loss < math.inf else "no evaluation finished"
        console.say(f"done: {run.iter_num} iterations, {best}, {time.time() - run.started:.0f} s; {saved(run, cfg)}")
    return steps.history


# -----------------------------------------------------------------------------
# The loop's bookkeeping: evaluations, the switch to dense attention

def evaluate_and_checkpoint(model, splits, run, cfg, env, ctrl_c, console, log, lr):
    """Evaluate, log the losses, and (but for eval_only) write the checkpoint. False when Ctrl-C cut
    the evaluation short."""
    losses = evaluate(model, splits, run.model.config.block_size, cfg, env, ctrl_c, console)
    if losses is None:
        return False
    console.say(f"step {run.iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    log.row(iter=run.iter_num, train_loss=f"{losses['train']:.5f}", val_loss=f"{losses['val']:.5f}", lr=lr,
            elapsed_s=f"{run.elapsed():.1f}")
    for split, loss in losses.items():
        check_finite(f"evaluation {split} loss", loss, run.iter_num, checkpoint_path(cfg))
    run.best_val_loss = min(run.best_val_loss, losses["val"])
    if not cfg.eval_only:
        checkpoint(run, cfg, env)
    return True


def switch_to_dense(run, cfg, env, console):
    """attn_switch_frac: the same weights attend densely from here on, compiled afresh."""
    console.say(f"iter {run.iter_num}: attn_switch_frac={cfg.attn_switch_frac}: switching attention "
                f"{run.model.attn} -> dense for the last {cfg.max_iters - run.iter_num} iterations")
    run.model.set_attn("dense")
    return wrap_model(run.model, cfg, env, console)


# -----------------------------------------------------------------------------
# Set-up: settings, device, data, model

def model_args_of(cfg, vocab_size):
    """The model's settings (the fields of model.GPTConfig) in the training config."""
    return dict(block_size=cfg.block_size, vocab_size=vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias, attn=cfg.attn, attn_backend=cfg.attn_backend)


def check_config(cfg):
    """Raise a ConfigError naming the first setting that cannot work: the settings (the dataset by its
    name, so that a typo is named before the out_dir it leads to), then the out_dir. A mistake costs no
    waiting."""
    for key, choices in (("init_from", ("scratch", "resume")), ("dtype", DTYPES), ("compile_mode", COMPILE_MODES)):
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {getattr(cfg, key)!r}")
    if cfg.eval_only and cfg.init_from != "resume":
        raise ConfigError("eval_only evaluates a trained model: add --init_from=resume (and the run's --out_dir)")
    if not 0.0 <= cfg.attn_switch_frac <= 1.0:
        raise ConfigError(f"attn_switch_frac must be in [0, 1], got {cfg.attn_switch_frac}")
    if cfg.time_limit_s < 0:
        raise ConfigError(f"time_limit_s must be >= 0 (0: no limit), got {cfg.time_limit_s}")
    for key in ("batch_size", "gradient_accumulation_steps", "eval_interval", "eval_iters", "log_interval"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
    # GPTConfig checks the model's settings (attn, sizes, n_embd % n_head, block_size >= n_head, ...).
    # The vocabulary comes with the dataset; any valid size gives the same verdict on the others.
    GPTConfig(**model_args_of(cfg, GPT2_VOCAB_SIZE))
    check_dataset(cfg.dataset)
    if cfg.init_from == "resume" and not os.path.exists(checkpoint_path(cfg)):
        raise no_checkpoint(checkpoint_path(cfg))
    return cfg


def checkpoint_path(cfg):
    return os.path.join(cfg.out_dir, "ckpt.pt")


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
    elapsed_s: float = 0.0             # the loop's seconds in the processes before this one (resumes)
    started: float = 0.0               # time.time() when this process's loop began

    def elapsed(self):
        """The training loop's seconds so far, over every process that ran it (a resume goes on counting)."""
        return self.elapsed_s + time.time() - self.started


def open_out_dir(cfg):
    """The checkpoint a resumed run continues (read before the data), or None for a run from scratch,
    which refuses an out_dir that holds a checkpoint rather than replace it."""
    path = checkpoint_path(cfg)
    if cfg.init_from == "scratch":
        if os.path.exists(path):
            raise ConfigError(f"{path} already holds a run: continue it with --init_from=resume, train this "
                              f"one into another --out_dir, or delete '{cfg.out_dir}' to start over")
        return None
    ckpt = load_checkpoint(path)
    trained_on = ckpt["config"]["dataset"]
    if trained_on != cfg.dataset:
        raise ConfigError(f"{path} was trained on dataset {trained_on!r}, not {cfg.dataset!r}: a resume "
                          f"continues on the run's own data (--dataset={trained_on}, or its config file)")
    return ckpt


def build_run(cfg, env, meta, ckpt):
    """A fresh model and optimizer; or, given the checkpoint of a resumed run, its model and optimizer
    together with its iteration, best val loss, data order and every process's dropout RNG."""
    model_args = model_args_of(cfg, meta["vocab_size"] if meta else GPT2_VOCAB_SIZE)
    if ckpt is not None:
        # the architecture must be the one that was trained; the rest (lr, max_iters...) may change
        model_args = {**ckpt["model_args"], "dropout": cfg.dropout, "attn_backend": cfg.attn_backend}
    model = model_of_checkpoint(ckpt, model_args, checkpoint_path(cfg)) if ckpt else GPT(GPTConfig(**model_args))
    model.to(env.device)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                           env.device_type)
    # the training batches of every process, all alike; checkpointed
    run = Run(model, optimizer, model_args, meta, data_gen=torch.Generator().manual_seed(cfg.seed),
              scaler=torch.amp.GradScaler(env.device_type, enabled=(env.dtype == "float16")))
    if ckpt is None:
        return run
    optimizer.load_state_dict(ckpt["optimizer"])
    if run.scaler.is_enabled() and ckpt["scaler"]:  # empty when the run was not float16
        run.scaler.load_state_dict(ckpt["scaler"])
    run.data_gen.set_state(ckpt["data_rng_state"])
    run.iter_num, run.best_val_loss, run.elapsed_s = ckpt["iter_num"], ckpt["best_val_loss"], ckpt["elapsed_s"]
    if len(ckpt["rng_states"]) != env.world:
        raise ConfigError(f"{checkpoint_path(cfg)} was written by {len(ckpt['rng_states'])} process(es): resume it "
                          f"with as many (torchrun --nproc_per_node={len(ckpt['rng_states'])}, or plain python for 1)")
    cpu_state, cuda_state = ckpt["rng_states"][env.rank]  # each process's dropout stream goes on
    torch.set_rng_state(cpu_state)
    if env.device_type == "cuda" and cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state)
    return run


def introduce(run, cfg, env, console):
    """Say what this run trains, and where; which settings a resumed checkpoint overrides; whether the
    run is clearly too big for a CPU."""
    model, T = run.model, run.model.config.block_size
    console.say(f"model: {model.get_num_params() / 1e6:.2f}M parameters, attn={model.attn}, "
                f"{model.attention_pairs() / (T * (T + 1) / 2 * model.config.n_head):.1%} of dense causal "
                f"attention pairs; device {env.device}, {env.dtype}")
    given = model_args_of(cfg, run.model_args["vocab_size"])  # a fresh model's; a resumed one's may differ
    ignored = [f"{k}={given[k]} (checkpoint: {v})" for k, v in run.model_args.items() if k in given and given[k] != v]
    if ignored:
        console.say("resumed: the model is the checkpoint's; settings that differ from it are not used: "
                    + ", ".join(ignored))
    quick = os.path.join(HERE, CPU_QUICK_START.split()[-1])  # absent in a copy of train.py without config/
    if env.device_type == "cpu" and not cfg.eval_only and os.path.isfile(quick):
        hint = slow_cpu_hint(cfg, parse_args([quick]), cfg.max_iters - run.iter_num)
        if hint:
            console.say(hint)


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


def warm_up(model, data, cfg, env):
    """One forward and backward, gradients and random state left as they were: the band kernel keeps
    small GPU tables made at its first call for a shape, which CUDA graphs (compile_mode=
    'reduce-overhead') would refuse if made while they record."""
    block_size = model.config.block_size
    ix = sample_starts(data, block_size, cfg.batch_size, torch.Generator().manual_seed(0))  # data order untouched
    X, Y = get_batch(data, ix, block_size, env.device)
    with torch.random.fork_rng(devices=[env.device]), env.autocast:
        model(X, Y)[1].backward()
    model.zero_grad(set_to_none=True)


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

def checkpoint(run, cfg, env):
    """Write everything resume needs to out_dir/ckpt.pt (the master does), every process's dropout RNG
    state gathered first: a collective, so under DDP all processes call this at the same point."""
    rng_states = [(torch.get_rng_state(), torch.cuda.get_rng_state() if env.device_type == "cuda" else None)]
    if env.ddp:
        mine, rng_states = rng_states[0], [None] * env.world
        dist.all_gather_object(rng_states, mine)
    if env.master:
        save_checkpoint(checkpoint_path(cfg), {
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),
            "model_args": run.model_args, "config": dataclasses.asdict(cfg), "iter_num": run.iter_num,
            "best_val_loss": float(run.best_val_loss), "data_rng_state": run.data_gen.get_state(),
            "rng_states": rng_states, "meta": run.meta, "elapsed_s": run.elapsed(),
            "attn": run.model.attn,  # model_args keep the pattern it was built with (attn_switch_frac)
        })
    run.saved_at = run.iter_num


def saved(run, cfg):
    """What this run left on disk, in words."""
    if run.saved_at is None:
        return "no checkpoint written"
    return f"checkpoint of iter {run.saved_at} in {checkpoint_path(cfg)}"


def save_on_stop(run, cfg, env, console, why="Ctrl-C"):
    """After Ctrl-C (or the time limit, `why`): a checkpoint of the whole state, or a line that says why
    there is nothing to save."""
    if cfg.eval_only:
        console.say(f"{why}: stopped; eval_only trains nothing, so there is nothing to save")
    elif run.iter_num == 0:
        console.say(f"{why}: stopped before the first training step: nothing to save")
    else:
        checkpoint(run, cfg, env)
        console.say(f"{why}: saved {checkpoint_path(cfg)} at iter {run.iter_num}; continue with --init_from=resume")


# -----------------------------------------------------------------------------
# Command line

def parse_args(argv):
    """TrainConfig from nanoGPT-style arguments (config files, then --key=value overrides), checked."""
    return check_config(parse_config(TrainConfig, argv))


def usage():
    """The --help text: how to call train.py, then every setting of TrainConfig with its default."""
    return "\n".join(["usage: python train.py [config/NAME.py ...] [--key=value ...]", "",
                      "Config files (plain Python assignments) and then --key=value set the settings below;",
                      f"a later one wins. Start with: {QUICK_START}", f"or, on a CPU: {CPU_QUICK_START}", "",
                      "settings (default, type):", settings_help(TrainConfig)])


def main(argv):
    if "-h" in argv or "--help" in argv:
        print_help(usage())
        return
    # a Ctrl-C that train() lets through came before training began (or is the second: it says what is kept)
    with one_line_errors(FloatingPointError, ctrl_c="Ctrl-C: stopped before training began; nothing was saved"):
        train(parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
