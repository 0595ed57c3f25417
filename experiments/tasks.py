"""
Does SPAttention match dense attention where the answer is known? Two synthetic tasks whose answer
sits in the context at a controlled distance, trained from scratch for every attention pattern, with
accuracy per distance bucket measured over training (issue #36, part 1).

    python experiments/tasks.py --throughput                # time each pattern; the steps a 10-minute call holds
    python experiments/tasks.py --dry_run                   # the plan: every run, and what is done or left
    python experiments/tasks.py --max_minutes=9             # run what is left, stop cleanly before 9 minutes; repeat
    python experiments/tasks.py --heads=4 --max_minutes=9   # the optional 4-head point
    python experiments/tasks.py --report_only               # table.md and the figures again, from the CSVs alone
    python experiments/tasks.py --help                      # every option, with its default

The design (experiments/results/tasks/README.md says why, and how to run it in calls of limited time):
  tasks    mqar: multi-query associative recall; copy: an exact copy of a random span. A byte
           vocabulary; every scored token is determined by the context, its answer at a distance
           drawn uniformly from [min_distance, N-2] (the tasks' section below)
  model    4 layers, 256 wide, N = block_size 1024; n_head 8 and 16 (4 optional): the band width N/H
           is what SP adds; patterns dense, sp, sp_exclusive, sp_balanced, and window, the negative
           control, which cannot see further than n_layer x N/H
  training AdamW, linear warmup over warmup_frac of the steps, then cosine to lr/10; fresh batches
           every step from the run's seeded generator; bf16 autocast on CUDA
  lr       per (task, heads, pattern), seed 0 at each --lr_sweep rate; the best final accuracy (ties:
           lower loss) picks the rate of its seeds 1, 2, ... (kept in lr.json)
  record   accuracy and loss per distance bucket on a fixed held-out set, every eval_interval steps
           (accuracy.csv, written as it goes); a row per finished run in runs.csv; table.md (regime
           checks first) and a figure per (task, heads)

A run lives in runs_dir/NAME/ckpt.pt (git-ignored), written atomically at every evaluation and when
--max_minutes is near: the next call continues it exactly (model, optimizer, step, generator state).
A run in runs.csv is done and skipped; its checkpoint is deleted.
"""

import dataclasses
import importlib.util
import inspect
import json
import math
import os
import shutil
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from model import ATTN_PATTERNS, GPT, ConfigError, GPTConfig, head_bands  # noqa: E402
from record import read_csv, write_atomic, write_csv  # noqa: E402
import utils  # noqa: E402
import record  # noqa: E402

# The byte vocabulary, in disjoint ranges, so that filler can never be taken for an answer.
FILLER = (0, 64)       # noise around the things that matter
VALUES = (64, 128)     # mqar's values, its answers: 64
KEYS = (128, 255)      # mqar's keys: 127, distinct within a sequence
SPAN = (64, 255)       # copy's span tokens: 191, distinct within a sequence (the tasks never share one)
MARK = 255             # copy: marks the start of the span and of its repeat
VOCAB = 256
TASKS = ("mqar", "copy")
PLACEMENT_ROUNDS = 8   # mqar: redraws of queries that overlap another (see mqar_batch)

# The regime checks and the verdict, fixed before any number exists (the README says why).
DENSE_FLOOR = 0.95     # dense must reach this accuracy in every distance bucket, every seed
CHANCE_MARGIN = 0.02   # window, beyond its reach, must stay at or below chance + this, or + CHANCE_SE
CHANCE_SE = 4          # binomial standard errors of chance at the bucket's count, where that is more
LEARNED = 0.90         # "a pattern has learned a distance": its seeds' mean accuracy reaches this
MATCH_MARGIN = 0.02    # "matches dense": no bucket more than this below dense's mean

STOP_RESERVE_S = 20.0  # kept free under --max_minutes: the last checkpoint, the CSVs, the report
SETUP_S = 10.0         # a run's set-up (model, evaluation set), in the estimate of whether it fits
THROUGHPUT_STEPS = 20  # timed steps per pattern in --throughput, after the warm-up ones


@dataclass
class Options:
    # what to run
    tasks: tuple = TASKS
    patterns: tuple = ("dense", "sp", "sp_exclusive", "sp_balanced", "window")
    heads: tuple = (8, 16)
    seeds: int = 3                            # seeds 0..seeds-1 at the chosen rate
    lr_sweep: tuple = (3e-4, 1e-3, 3e-3)      # seed 0 at each rate; one rate: no sweep
    # the model
    n_layer: int = 4
    n_embd: int = 256
    block_size: int = 1024
    # the tasks
    min_distance: int = 64                    # answers sit at distances [min_distance, block_size-2]
    n_queries: int = 16                       # mqar: queries a sequence (at most block_size // 64)
    span: int = 32                            # copy: tokens of the copied span, distinct (<= min_distance)
    bucket: int = 64                          # distances per bucket of the accuracy
    # training
    steps: int = 2000                         # optimizer steps a run (size it from --throughput)
    batch_size: int = 32                      # sequences a step
    warmup_frac: float = 0.05
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0
    eval_interval: int = 100                  # steps between evaluations (and checkpoints)
    eval_sequences: int = 1024                # the held-out set, the same for every run of a task
    compile: bool = False                     # torch.compile each run's model (compiled anew every run)
    device: str = "auto"                      # auto: cuda when there is one, else cpu
    # where, and for how long
    results_dir: str = "experiments/results/tasks"
    runs_dir: str = "out-tasks"               # checkpoints (git-ignored, never committed)
    max_minutes: float = 0.0                  # stop cleanly, checkpoint saved, before this; 0: no limit
    throughput: bool = False                  # time every (pattern, heads) and print what a call holds
    dry_run: bool = False                     # print the plan and what is done; run nothing
    report_only: bool = False                 # table.md and the figures from the CSVs; run nothing


# Options that may differ between calls into one results_dir; experiment.json pins all the others.
PER_CALL = ("tasks", "patterns", "heads", "seeds", "lr_sweep", "compile", "device", "results_dir", "runs_dir",
            "max_minutes", "throughput", "dry_run", "report_only")


# -----------------------------------------------------------------------------
# The tasks. A batch is (inputs, targets, distance), each (B, N) on the generator's device. The
# sequence is a token stream x of N + 1 tokens; inputs = x[:N], and targets[i] = x[i + 1] where a
# position is scored, -1 elsewhere (GPT's cross-entropy ignores -1). distance[i] (-1 where not
# scored) is how far back the answer sits: targets[i] == inputs[i - distance[i]]. In both tasks the
# token just before the answer, inputs[i - distance[i] - 1], equals inputs[i]: an induction head
# finds the answer by matching the current token and reading its successor.

def make_batch(task, o, batch_size, gen):
    if task == "mqar":
        return mqar_batch(batch_size, o.block_size, o.n_queries, o.min_distance, gen)
    return copy_batch(batch_size, o.block_size, o.span, o.min_distance, gen)


def chance(task, o):
    """The accuracy of a model that cannot see the answer. mqar: 1/64, values are uniform and
    independent of all else. copy: span tokens are distinct, so a model that has seen the repeat's
    first k tokens (all local) can rule those out: 1/(191 - k), at most 1/(191 - span + 1)."""
    if task == "mqar":
        return 1 / (VALUES[1] - VALUES[0])
    return 1 / (SPAN[1] - SPAN[0] - o.span + 1)


def mqar_batch(B, N, n_queries, min_distance, gen):
    """Multi-query associative recall. Each sequence holds n_queries keys, distinct, each stored once
    as a pair (key, value) and queried once, later, by the same pair; filler elsewhere. The scored
    position is the query's key: it must predict the value that followed the key's first occurrence.

    Query q draws its answer distance a uniformly from [min_distance, N-2] and its key's position i
    uniformly from [a+1, N-1]; the stored key sits at i-a-1 and its value at i-a (the answer); the
    query's value at i+1 is the target. A query whose four positions overlap another's draws its
    position again (its distance stays: redrawing that too would favour the distances that overlap
    less), PLACEMENT_ROUNDS times; one that still overlaps is left out (filler, not scored), rarely at
    n_queries <= N/64 (tests/test_tasks.py bounds how rarely).
    """
    dev, Q = gen.device, n_queries
    a = torch.randint(min_distance, N - 1, (B, Q), generator=gen, device=dev)
    i = torch.zeros_like(a)
    redraw = torch.ones(B, Q, dtype=torch.bool, device=dev)
    for _ in range(PLACEMENT_ROUNDS):  # a fixed number of rounds: no host sync, the same draws on any device
        u = torch.rand(B, Q, generator=gen, device=dev)
        new_i = (a + 1 + (u * (N - 1 - a)).long()).clamp_(max=N - 1)  # clamp: u*n may round up to n
        i = torch.where(redraw, new_i, i)
        redraw = overlaps(torch.stack([i - a - 1, i - a, i, i + 1], dim=-1), N + 1)
    keys = torch.rand(B, KEYS[1] - KEYS[0], generator=gen, device=dev).argsort(dim=1)[:, :Q] + KEYS[0]
    values = torch.randint(*VALUES, (B, Q), generator=gen, device=dev)
    # column N + 1 of every tensor below takes the writes of left-out queries, and is cut off
    pos = torch.where(redraw.unsqueeze(-1), N + 1, torch.stack([i - a - 1, i - a, i, i + 1], dim=-1))
    x = torch.randint(*FILLER, (B, N + 2), generator=gen, device=dev)
    x.scatter_(1, pos.view(B, -1), torch.stack([keys, values, keys, values], dim=-1).view(B, -1))
    scored = torch.where(redraw, N + 1, i)
    targets = torch.full((B, N + 2), -1, dtype=torch.long, device=dev).scatter_(1, scored, values)
    distance = torch.full_like(targets, -1).scatter_(1, scored, a)
    return cut(x, targets, distance, N)


def copy_batch(B, N, span, min_distance, gen):
    """Exact copy. Each sequence holds one span of `span` random tokens, distinct, from SPAN, with MARK
    just before it, and later MARK and the same tokens again, D = a + 1 positions after the original,
    the answer distance a drawn uniformly from [min_distance, N-2]; filler elsewhere. Every position of
    the repeat is scored, its second MARK first: there the target is the span's first token, found after
    the earlier MARK, and each later target is the token D - 1 back, found after the one earlier copy
    of the current token (distinct tokens: as in the repeated random tokens of the induction-head
    studies, whose vocabulary of 50k makes repeats rare). The span starts uniformly in [1, N-D]; a
    repeat that runs past the sequence's end is cut there, so the longest distances have fewer scored
    tokens (accuracy.csv counts them).
    """
    dev = gen.device
    a = torch.randint(min_distance, N - 1, (B, 1), generator=gen, device=dev)
    D = a + 1
    start = (1 + (torch.rand(B, 1, generator=gen, device=dev) * (N - D)).long()).clamp_(max=N - D)
    tokens = torch.rand(B, SPAN[1] - SPAN[0], generator=gen, device=dev).argsort(dim=1)[:, :span] + SPAN[0]
    k = torch.arange(span, device=dev)
    repeat = start + D + k
    repeat = torch.where(repeat <= N, repeat, N + 1)  # cut at the stream's end (column N + 1 is cut off)
    x = torch.randint(*FILLER, (B, N + 2), generator=gen, device=dev)
    x.scatter_(1, torch.cat([start - 1, start - 1 + D], dim=1), MARK)
    x.scatter_(1, start + k, tokens)
    x.scatter_(1, repeat, tokens)
    scored = torch.where(repeat <= N, repeat - 1, N + 1)  # input i predicts x[i + 1]
    targets = torch.full((B, N + 2), -1, dtype=torch.long, device=dev).scatter_(1, scored, tokens)
    distance = torch.full_like(targets, -1).scatter_(1, scored, a.expand(B, span))
    return cut(x, targets, distance, N)


def cut(x, targets, distance, N):
    """The first N columns of each (the stream's last token is only a target; the dump column goes)."""
    return tuple(t[:, :N].contiguous() for t in (x, targets, distance))


def overlaps(pos, length):
    """(B, Q) bool: whether any of query q's positions pos[b, q, :] is also used by another query."""
    B = pos.size(0)
    flat = pos.reshape(B, -1)
    used = torch.zeros(B, length, dtype=torch.long, device=pos.device).scatter_add_(1, flat, torch.ones_like(flat))
    return (used.gather(1, flat) > 1).view(pos.shape).any(dim=-1)


def buckets(o):
    """[(lo, hi)]: the distance buckets, bucket wide from min_distance; the last ends at N-1 (exclusive)."""
    edges = list(range(o.min_distance, o.block_size - 1, o.bucket)) + [o.block_size - 1]
    return list(zip(edges[:-1], edges[1:]))


def eval_set(task, o, device):
    """The held-out batches of a task: the same for every run, whatever its pattern, seed, call or
    machine. Drawn on the CPU: a GPU's random numbers for one seed may differ from one kind of GPU to
    another."""
    gen = torch.Generator()
    gen.manual_seed(TASKS.index(task) + 1)  # training generators start at 1,000,003 (data_seed)
    sizes = [o.batch_size] * (o.eval_sequences // o.batch_size) + [o.eval_sequences % o.batch_size]
    return [tuple(t.to(device) for t in make_batch(task, o, n, gen)) for n in sizes if n]


# -----------------------------------------------------------------------------
# A run: one pattern trained on one task from one seed at one rate

@dataclass(frozen=True)
class Run:
    task: str
    pattern: str
    n_head: int
    block_size: int
    seed: int
    lr: float | None                         # None: its lr sweep has not finished

    @property
    def name(self):
        return f"{self.task}_{self.pattern}_h{self.n_head}_n{self.block_size}_lr{fmt_lr(self.lr)}_s{self.seed}"

    @property
    def key(self):
        """Its identity in runs.csv and accuracy.csv: the values of KEY as written there."""
        return (self.task, self.pattern, str(self.n_head), str(self.block_size), str(self.seed), fmt_lr(self.lr))


def fmt_lr(lr):
    return "?" if lr is None else f"{lr:g}"


def setting_name(task, n_head, block_size):
    return f"{task}_h{n_head}_n{block_size}"


def data_seed(run):
    """The seed of a run's batches: its seed and task, not its pattern, so the patterns of one seed see
    the same batches (paired), and far from eval_set's seeds."""
    return 1_000_003 * (run.seed + 1) + TASKS.index(run.task)


def build_model(run, o):
    """The run's GPT, initialized from its seed (on the CPU: the same weights on any device)."""
    torch.manual_seed(run.seed)
    return GPT(GPTConfig(n_layer=o.n_layer, n_head=run.n_head, n_embd=o.n_embd, block_size=o.block_size,
                         vocab_size=VOCAB, dropout=0.0, bias=False, attn=run.pattern))


def lr_at(step, o, lr):
    """Linear warmup over warmup_frac of the steps, then cosine from lr down to lr / 10 at the last step."""
    warmup = round(o.warmup_frac * o.steps)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, o.steps - warmup)
    return lr / 10 + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - lr / 10)


def autocast_of(device):
    """bf16 autocast on a CUDA GPU, float32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def train_run(run, o, clock, device, held_out):
    """Train `run` from scratch or on from its checkpoint, until its last step or until --max_minutes
    is near. Returns 'done', 'stopped' (the checkpoint saved) or 'diverged'; a finished or diverged run
    gets its runs.csv row. The run's accuracy rows are kept in its checkpoint and written to
    accuracy.csv at every evaluation, so a run continued elsewhere rewrites them whole."""
    path = os.path.join(o.runs_dir, run.name, "ckpt.pt")
    model = build_model(run, o).to(device)
    optimizer = model.configure_optimizers(o.weight_decay, run.lr, (o.beta1, o.beta2), device.type)
    gen = torch.Generator(device=device)
    gen.manual_seed(data_seed(run))
    state = load_checkpoint(path, run, o)
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
    else:
        state = dict(step=0, rows=[], train_s=0.0, speeds=[])
    step, rows = state["step"], state["rows"]
    save_run_rows(o, "accuracy.csv", run, rows)  # a restarted run's old rows go
    print(f"=== {run.name}: {f'resuming at step {step}' if step else 'training'}, {o.steps} steps of "
          f"{o.batch_size} x {o.block_size} tokens", flush=True)
    forward = compiled(model) if o.compile else model
    autocast = autocast_of(device)

    def checkpoint():
        state.update(step=step, model=model.state_dict(), optimizer=optimizer.state_dict(),
                     generator=gen.get_state(), settings=run_settings(run, o))
        save_checkpoint(path, state)

    if not rows:  # the untrained model, for the curves' first point
        rows += evaluate(model, held_out, o, autocast, step)
    t0, segment_start = time.time(), step
    while step < o.steps:
        if clock.left() < STOP_RESERVE_S:
            state["train_s"] += sync_time(device) - t0
            checkpoint()
            print(f"=== {run.name}: stopped at step {step} (time limit), checkpoint saved", flush=True)
            return "stopped"
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, o, run.lr)
        x, y, _ = make_batch(run.task, o, o.batch_size, gen)
        with autocast:
            _, loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % o.eval_interval and step < o.steps:
            continue
        train_loss, seconds = loss.item(), sync_time(device) - t0  # .item() waits for the GPU
        state["train_s"] += seconds
        state["speeds"].append((step - segment_start) * o.batch_size * o.block_size / seconds)
        new = evaluate(model, held_out, o, autocast, step)
        if not math.isfinite(train_loss) or not all(math.isfinite(r["loss"]) for r in new):
            return diverged(run, o, path, model, rows, step, state, device)
        rows += new
        checkpoint()
        save_run_rows(o, "accuracy.csv", run, rows)
        ev = summary(new)
        print(f"{run.name} step {step}: train loss {train_loss:.4f}, eval loss {ev['loss']:.4f}, accuracy "
              f"{ev['accuracy']:.4f} (lowest {ev['min_bucket_accuracy']:.4f} at d >= {ev['min_bucket']}), "
              f"{state['speeds'][-1] / 1e6:.3f} M tokens/s", flush=True)
        t0, segment_start = time.time(), step
    finish(run, o, path, model, rows, state, device)
    return "done"


def compiled(model):
    """torch.compile of a fresh model. Dynamo's caches are reset first: every run builds a new model,
    and after cache_size_limit recompilations of one function dynamo would fall back to eager silently."""
    torch._dynamo.reset()
    return torch.compile(model)


def sync_time(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time()


@torch.no_grad()
def evaluate(model, held_out, o, autocast, step):
    """Accuracy (argmax at the scored positions) and loss per distance bucket on the held-out batches:
    a row per bucket. Eager, whatever --compile: evaluation is forward-only and rare."""
    bounds = buckets(o)
    count = torch.zeros(len(bounds), dtype=torch.float64, device=held_out[0][0].device)
    correct, loss = torch.zeros_like(count), torch.zeros_like(count)
    model.eval()
    for x, y, d in held_out:
        with autocast:
            logits, _ = model(x, y)
        scored = y >= 0
        logits, y, b = logits[scored].float(), y[scored], (d[scored] - o.min_distance) // o.bucket
        count += torch.bincount(b, minlength=len(bounds))
        correct += torch.bincount(b, weights=(logits.argmax(-1) == y).double(), minlength=len(bounds))
        loss += torch.bincount(b, weights=F.cross_entropy(logits, y, reduction="none").double(), minlength=len(bounds))
    model.train()
    tokens = step * o.batch_size * o.block_size
    return [dict(step=step, tokens=tokens, bucket=lo, bucket_hi=hi, count=int(n), accuracy=c / n if n else math.nan,
                 loss=l_ / n if n else math.nan)
            for (lo, hi), n, c, l_ in zip(bounds, count.tolist(), correct.tolist(), loss.tolist())]


def summary(rows):
    """Accuracy over every scored position, and the lowest bucket's, of one evaluation's rows."""
    rows = [r for r in rows if r["count"]]
    n = sum(r["count"] for r in rows)
    acc = sum(r["accuracy"] * r["count"] for r in rows) / n
    loss = sum(r["loss"] * r["count"] for r in rows) / n
    lowest = min(rows, key=lambda r: r["accuracy"] if math.isfinite(r["accuracy"]) else -1.0)
    return dict(accuracy=acc, loss=loss, min_bucket_accuracy=lowest["accuracy"], min_bucket=lowest["bucket"])


def finish(run, o, path, model, rows, state, device):
    """The run's runs.csv row (which marks it done), then its checkpoint goes."""
    last = summary([r for r in rows if r["step"] == o.steps])
    save_run_rows(o, "runs.csv", run, [dict(
        n_layer=o.n_layer, n_embd=o.n_embd, params=model.get_num_params(non_embedding=False),
        tokens=o.steps * o.batch_size * o.block_size, steps=o.steps, chance=chance(run.task, o),
        accuracy=last["accuracy"], loss=last["loss"], min_bucket_accuracy=last["min_bucket_accuracy"], tokens_per_s=f"{statistics.median(state['speeds']):.0f}",
        train_s=f"{state['train_s']:.1f}", device=device_name(device), error="")])
    print(f"=== {run.name}: done; final accuracy {last['accuracy']:.4f}, lowest bucket "
          f"{last['min_bucket_accuracy']:.4f} (at d >= {last['min_bucket']})", flush=True)
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def diverged(run, o, path, model, rows, step, state, device):
    """A non-finite loss (too high a rate, say): a result, not a crash. Its row says so; NaN accuracy."""
    save_run_rows(o, "accuracy.csv", run, rows)
    save_run_rows(o, "runs.csv", run, [dict(
        n_layer=o.n_layer, n_embd=o.n_embd, params=model.get_num_params(non_embedding=False),
        tokens=step * o.batch_size * o.block_size, steps=o.steps, chance=chance(run.task, o), accuracy=math.nan,
        loss=math.nan, min_bucket_accuracy=math.nan, train_s=f"{state['train_s']:.1f}", device=device_name(device),
        error=f"diverged: non-finite loss by step {step}")])
    print(f"=== {run.name}: diverged (non-finite loss by step {step})", flush=True)
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return "diverged"


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


# -----------------------------------------------------------------------------
# Checkpoints: everything a run needs to go on exactly where it stopped

def run_settings(run, o):
    """What a checkpoint must have been trained with to be continued: the run and the shared options."""
    return json.loads(json.dumps({"run": dataclasses.asdict(run), **shared_options(o)}))


def save_checkpoint(path, state):
    """torch.save to a temporary file, then a rename: a killed call leaves the old checkpoint whole."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(path, run, o):
    """The saved state of `run`, or None when there is none or it was trained with other settings."""
    if not os.path.exists(path):
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("settings") != run_settings(run, o):
        print(f"{path} holds a checkpoint of other settings: starting this run afresh", flush=True)
        return None
    return state


def checkpoint_step(run, o):
    """The step of run's checkpoint, or None."""
    path = os.path.join(o.runs_dir, run.name, "ckpt.pt")
    if not os.path.exists(path):
        return None
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return state["step"] if state.get("settings") == run_settings(run, o) else None


# -----------------------------------------------------------------------------
# The plan

def plan(o, chosen):
    """Every run of this call's options, in order, setting by setting (heads, then task): each
    pattern's lr sweep (seed 0 at each rate: --lr_sweep's, or the rates its choice in lr.json was made
    from; none with one rate), then seed by seed every pattern at its chosen rate (None while its
    sweep is not finished). The sweep's run at the chosen rate is also that pattern's seed-0 run: it
    appears once. `chosen`: {(task, pattern, n_head): lr.json's entry}, see choose_lrs."""
    N, runs = o.block_size, []
    for H in o.heads:
        for task in o.tasks:
            for p in o.patterns:
                c = chosen.get((task, p, H))
                rates = [float(lr) for lr in c["sweep"]] if c else o.lr_sweep
                runs += [Run(task, p, H, N, 0, lr) for lr in rates] if len(rates) > 1 else []
            for s in range(o.seeds):
                for p in o.patterns:
                    c = chosen.get((task, p, H))
                    lr = c["lr"] if c else o.lr_sweep[0] if len(o.lr_sweep) == 1 else None
                    if not (lr is None and s == 0):
                        runs.append(Run(task, p, H, N, s, lr))
    return list(dict.fromkeys(runs))


def best_lr(rows):
    """The rate of the runs.csv row with the highest final accuracy (ties: the lower loss); a run that
    diverged (NaN) ranks last."""
    def score(r):
        acc, loss = float(r["accuracy"]), float(r["loss"])
        return (acc if math.isfinite(acc) else -1.0, -loss if math.isfinite(loss) else -math.inf)
    return float(max(rows, key=score)["lr"])


def choose_lrs(o, save=True):
    """{(task, pattern, n_head): {"lr": the chosen rate, "sweep": {rate: final accuracy}}} for this
    call's settings whose sweep is complete in runs.csv, with what earlier calls chose (results_dir/
    lr.json, which later calls keep whatever their --lr_sweep). With one rate there is nothing to choose."""
    path = os.path.join(o.results_dir, "lr.json")
    store = json.load(open(path)) if os.path.exists(path) else {}
    runs = {key_of(r): r for r in read_csv(os.path.join(o.results_dir, "runs.csv"))}
    new = False
    for H in o.heads:
        for task in o.tasks:
            chosen = store.setdefault(setting_name(task, H, o.block_size), {})
            for p in o.patterns:
                rows = [runs.get(Run(task, p, H, o.block_size, 0, lr).key) for lr in o.lr_sweep]
                if p in chosen or len(o.lr_sweep) == 1 or None in rows:
                    continue
                chosen[p] = dict(lr=best_lr(rows), sweep={r["lr"]: float(r["accuracy"]) for r in rows})
                new = True
                print(f"lr for {p} on {task} at {H} heads: {chosen[p]['lr']:g} (final accuracy by lr: "
                      + ", ".join(f"{k}: {v:.4f}" for k, v in chosen[p]["sweep"].items()) + ")", flush=True)
    if new and save:
        os.makedirs(o.results_dir, exist_ok=True)
        write_atomic(path, json.dumps(store, indent=1, sort_keys=True) + "\n")
    return {(task, p, H): c for H in o.heads for task in o.tasks
            for p, c in store.get(setting_name(task, H, o.block_size), {}).items()}


def run_experiment(o):
    """Run what is left of the plan, in order, until it is done or --max_minutes is near; then say
    what is left. A run starts only when the speed measured for it (in this call, or by --throughput
    on this device) says it fits in the time left, except the call's first: a run longer than a call
    goes on from its checkpoint in the next call."""
    device = pick_device(o)
    check_experiment(o)
    clock, held_out, estimates, ran = Clock(o.max_minutes), {}, Estimates(o, device), 0
    while True:
        done = {key_of(r) for r in read_csv(os.path.join(o.results_dir, "runs.csv"))}
        todo = [r for r in plan(o, choose_lrs(o)) if r.key not in done]
        ready = [r for r in todo if r.lr is not None]
        if not ready or clock.left() < STOP_RESERVE_S + SETUP_S:
            break
        run = ready[0]
        from_step = checkpoint_step(run, o) or 0
        need = estimates.seconds(run, from_step)
        if ran and need is not None and need > clock.left() - STOP_RESERVE_S:
            print(f"=== {run.name} needs about {need:.0f} s, more than this call has left", flush=True)
            break
        if run.task not in held_out:
            held_out[run.task] = eval_set(run.task, o, device)
        t0 = time.time()
        outcome = train_run(run, o, clock, device, held_out[run.task])
        estimates.measured(run, time.time() - t0, from_step)
        ran += 1
        if outcome == "stopped":
            break
    say_left(o, todo, estimates)


class Clock:
    """The seconds this call may still use (--max_minutes; no limit when 0)."""

    def __init__(self, max_minutes):
        self.deadline = time.time() + 60 * max_minutes if max_minutes > 0 else math.inf

    def left(self):
        return self.deadline - time.time()


class Estimates:
    """How long a run takes: its speed in this call, else throughput.csv's for this device (for another
    device where there is none, e.g. for --dry_run on a machine without the GPU), else unknown."""

    def __init__(self, o, device):
        self.o, self.known = o, {}
        timed = [r for r in read_csv(os.path.join(o.results_dir, "throughput.csv")) if r["compile"] == str(o.compile)]
        here = [r for r in timed if r["device"] == device_name(device)]
        for r in here or timed:
            self.known[(r["pattern"], int(r["n_head"]))] = (float(r["step_s"]), float(r["eval_s"]))

    def seconds(self, run, from_step=0):
        if (run.pattern, run.n_head) not in self.known:
            return None
        step_s, eval_s = self.known[(run.pattern, run.n_head)]
        return SETUP_S + (self.o.steps - from_step) * step_s + self.evals(from_step) * eval_s

    def evals(self, from_step):
        """Evaluations from from_step to the end: every eval_interval steps and at the last (and at 0)."""
        return len(range(from_step, self.o.steps, self.o.eval_interval)) + 1

    def measured(self, run, seconds, from_step):
        """A run's wall time in this call: the speed of its (pattern, heads) for the rest of the call."""
        row = next((r for r in read_csv(os.path.join(self.o.results_dir, "runs.csv")) if key_of(r) == run.key), None)
        if row and row["tokens_per_s"] and not row["error"]:
            step_s = self.o.batch_size * self.o.block_size / float(row["tokens_per_s"])
            train_s = SETUP_S + (self.o.steps - from_step) * step_s
            self.known[(run.pattern, run.n_head)] = (step_s, max(0.0, seconds - train_s) / self.evals(from_step))

    def total(self, runs):
        times = [self.seconds(r) for r in runs]
        return None if None in times else sum(times)


def say_left(o, todo, estimates=None):
    if not todo:
        print(f"nothing left: every run of this plan is in {os.path.join(o.results_dir, 'runs.csv')}")
        return
    waiting = sum(r.lr is None for r in todo)
    total = estimates.total(todo) if estimates else None  # a run's time does not depend on its rate
    names = ", ".join(r.name for r in todo[:3]) + (", ..." if len(todo) > 3 else "")
    print(f"left: {len(todo)} runs ({waiting} waiting for an lr sweep"
          + (f"; about {total / 60:.1f} minutes at the speeds measured" if total else "")
          + f"): {names}. Run the same command again to continue.")


def pick_device(o):
    if o.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(o.device)
    except RuntimeError:
        raise ConfigError(f"--device={o.device!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device={o.device}: this script runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device={o.device}, but this machine has no CUDA GPU: use --device=cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device={o.device}, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def shared_options(o):
    return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(o))).items() if k not in PER_CALL}


def check_experiment(o):
    """results_dir/experiment.json holds what every call into results_dir shares (the model, the tasks,
    the training, the evaluation: record.check_shared)."""
    record.check_shared(os.path.join(o.results_dir, "experiment.json"), shared_options(o), ConfigError)


def show_plan(o):
    """--dry_run: every run of the plan and its state; nothing is written."""
    done = {key_of(r): r for r in read_csv(os.path.join(o.results_dir, "runs.csv"))}
    runs = plan(o, choose_lrs(o, save=False))
    for r in runs:
        if r.lr is None:
            state = "waiting for the lr sweep"
        elif r.key in done:
            state = "done" + (f" ({done[r.key]['error']})" if done[r.key]["error"] else "")
        else:
            step = checkpoint_step(r, o)
            state = "to do" if step is None else f"checkpoint at step {step}"
        print(f"{r.name:<48} {o.steps:>6} steps {o.steps * o.batch_size * o.block_size / 1e6:>8.1f} M tokens   {state}")
    estimates = Estimates(o, pick_device(o))
    say_left(o, [r for r in runs if r.key not in done], estimates)


def measure_throughput(o):
    """--throughput: time THROUGHPUT_STEPS training steps (of the first task's batches) and one evaluation
    of each (pattern, heads); print what a run costs and what a 10-minute call holds, and keep the speeds
    in throughput.csv, from which run_experiment estimates whether a run fits in a call."""
    device = pick_device(o)
    print(f"{device_name(device)}, torch {torch.__version__}, compile {o.compile}, {o.batch_size} x {o.block_size} "
          f"tokens a step, {o.n_layer} layers x {o.n_embd}, {o.steps} steps a run", flush=True)
    print(f"{'pattern':<14}{'heads':>6}{'ms/step':>9}{'M tok/s':>9}{'eval s':>8}{'warm-up s':>10}"
          f"{'steps/10 min':>13}{'run s':>8}", flush=True)
    rows, held_out = [], eval_set(o.tasks[0], o, device)
    for H in o.heads:
        for p in o.patterns:
            run = Run(o.tasks[0], p, H, o.block_size, 0, o.lr_sweep[0])
            rows.append(time_pattern(run, o, device, held_out))
            write_throughput(o, rows)
            r, run_s = rows[-1], Estimates(o, device).seconds(run)
            print(f"{p:<14}{H:>6}{1e3 * r['step_s']:>9.2f}{r['tokens_per_s'] / 1e6:>9.3f}{r['eval_s']:>8.2f}"
                  f"{r['warmup_s']:>10.1f}{int(600 / r['step_s']):>13}{run_s:>8.0f}", flush=True)
    runs, estimates = plan(o, {}), Estimates(o, device)
    total = estimates.total(runs)
    print(f"the plan: {len(runs)} runs of {o.steps} steps, about {total / 60:.1f} minutes of GPU time, "
          f"{math.ceil(total / 480)} calls of 8 minutes' runs; 1000 more steps a run add about "
          f"{sum(estimates.known[(r.pattern, r.n_head)][0] for r in runs) * 1000 / 60:.1f} minutes", flush=True)


def time_pattern(run, o, device, held_out):
    model = build_model(run, o).to(device)
    optimizer = model.configure_optimizers(o.weight_decay, run.lr, (o.beta1, o.beta2), device.type)
    forward = compiled(model) if o.compile else model
    gen = torch.Generator(device=device)
    gen.manual_seed(data_seed(run))
    autocast = autocast_of(device)

    def steps(n):
        t0 = sync_time(device)
        for _ in range(n):
            x, y, _ = make_batch(run.task, o, o.batch_size, gen)
            with autocast:
                _, loss = forward(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return sync_time(device) - t0

    warmup_s = steps(3)  # the first steps pay for compilation, autotuning and lazy initialization
    step_s = steps(THROUGHPUT_STEPS) / THROUGHPUT_STEPS
    t0 = sync_time(device)
    evaluate(model, held_out, o, autocast, 0)
    eval_s = sync_time(device) - t0
    return dict(pattern=run.pattern, n_head=run.n_head, block_size=o.block_size, n_layer=o.n_layer, n_embd=o.n_embd,
                batch_size=o.batch_size, compile=str(o.compile), step_s=step_s, eval_s=eval_s, warmup_s=warmup_s,
                tokens_per_s=o.batch_size * o.block_size / step_s, device=device_name(device), torch=torch.__version__)


def write_throughput(o, rows):
    """throughput.csv: this call's rows in place of any of the same (pattern, heads, device, compile)."""
    path = os.path.join(o.results_dir, "throughput.csv")
    same = {(r["pattern"], str(r["n_head"]), r["device"], r["compile"]) for r in rows}
    old = [r for r in read_csv(path) if (r["pattern"], r["n_head"], r["device"], r["compile"]) not in same]
    write_csv(path, COLUMNS["throughput.csv"], old + rows)


# -----------------------------------------------------------------------------
# The record: CSV files in results_dir

KEY = ("task", "pattern", "n_head", "block_size", "seed", "lr")
COLUMNS = {
    "runs.csv": list(KEY) + ["n_layer", "n_embd", "params", "tokens", "steps", "chance", "accuracy", "loss",
                             "min_bucket_accuracy", "tokens_per_s", "train_s", "device", "error"],
    "accuracy.csv": list(KEY) + ["step", "tokens", "bucket", "bucket_hi", "count", "accuracy", "loss"],
    "throughput.csv": ["pattern", "n_head", "block_size", "n_layer", "n_embd", "batch_size", "compile", "step_s",
                       "eval_s", "warmup_s", "tokens_per_s", "device", "torch"],
}


def key_of(row):
    return tuple(row[k] for k in KEY)


def save_run_rows(o, name, run, rows):
    """Put `run`'s rows (dicts of the columns after KEY) into results_dir/name in place of any it had."""
    path = os.path.join(o.results_dir, name)
    old = [r for r in read_csv(path) if key_of(r) != run.key]
    if rows or os.path.exists(path):
        write_csv(path, COLUMNS[name], old + [{**dict(zip(KEY, run.key)), **r} for r in rows])


# -----------------------------------------------------------------------------
# The report: table.md and a figure per setting, from runs.csv and accuracy.csv alone

@dataclass
class Pattern:
    """The runs of one pattern in one setting at its chosen rate, and what they measured."""
    name: str
    lr: str
    runs: list                               # runs.csv rows
    finals: list                             # per run: {bucket: accuracy} at its last step ({} if it diverged)
    curve: dict                              # {step: {bucket: mean accuracy over the runs}}, steps all runs have
    sweep: dict                              # {lr: final accuracy} of the seed-0 runs


@dataclass
class Setting:
    task: str
    n_head: int
    block_size: int
    n_layer: int
    chance: float                            # the accuracy of a model that cannot see the answer
    buckets: list                            # [(lo, hi)]
    counts: dict                             # {bucket: scored positions}: the held-out set is the same for all
    patterns: dict                           # name -> Pattern

    @property
    def name(self):
        return setting_name(self.task, self.n_head, self.block_size)

    @property
    def reach(self):
        """How far back window can see through all its layers: n_layer x its widest band."""
        return self.n_layer * max(hi - 1 for head in head_bands(self.n_head, self.block_size, "window").tolist()
                                  for lo, hi in head if hi > lo)


def load(results_dir):
    """Every setting in results_dir's CSVs, in the order (task, heads, N)."""
    runs = read_csv(os.path.join(results_dir, "runs.csv"))
    if not runs:
        raise ConfigError(f"no runs in {os.path.join(results_dir, 'runs.csv')}: nothing to report")
    evals, counts = {}, {}
    for r in read_csv(os.path.join(results_dir, "accuracy.csv")):
        b = (int(r["bucket"]), int(r["bucket_hi"]))
        evals.setdefault(key_of(r), {}).setdefault(int(r["step"]), {})[b] = float(r["accuracy"])
        counts.setdefault(r["task"], {})[b] = int(r["count"])
    groups = {}
    for r in runs:
        groups.setdefault((r["task"], int(r["n_head"]), int(r["block_size"])), {}).setdefault(r["pattern"], []).append(r)
    settings = []
    for (task, H, N), by_pattern in sorted(groups.items(), key=lambda kv: (TASKS.index(kv[0][0]), kv[0][1:])):
        patterns = {p: pattern_of(p, rows, evals) for p, rows in sorted(
            by_pattern.items(), key=lambda kv: ATTN_PATTERNS.index(kv[0]))}
        bounds = sorted({b for p in patterns.values() for f in p.finals for b in f} |
                        {b for p in patterns.values() for c in p.curve.values() for b in c})
        first = next(iter(by_pattern.values()))[0]
        settings.append(Setting(task, H, N, int(first["n_layer"]), float(first["chance"]), bounds,
                                counts.get(task, {}), patterns))
    return settings


def pattern_of(name, rows, evals):
    """A pattern's runs at its chosen rate: the rate of its seeds >= 1 (they ran at lr.json's choice),
    else the best of its seed-0 runs (the sweep, as choose_lrs picks)."""
    later = [r for r in rows if r["seed"] != "0"]
    lr = later[0]["lr"] if later else fmt_lr(best_lr(rows))
    runs = sorted((r for r in rows if r["lr"] == lr), key=lambda r: int(r["seed"]))
    curves = [evals.get(key_of(r), {}) for r in runs]
    finals = [c.get(int(r["steps"]), {}) if not r["error"] else {} for r, c in zip(runs, curves)]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    curve = {s: {b: statistics.mean(c[s][b] for c in curves) for b in curves[0][s]} for s in steps}
    sweep = {r["lr"]: float(r["accuracy"]) for r in sorted(rows, key=lambda r: float(r["lr"])) if r["seed"] == "0"}
    return Pattern(name, lr, runs, finals, curve, sweep)


def regime(s):
    """The two regime checks of a setting: [(check, passed, what was seen)]. A missing or diverged
    run fails its check (NaN never passes: every comparison with it is False)."""
    checks = []
    dense = s.patterns.get("dense")
    if dense is None:
        checks.append((f"dense >= {DENSE_FLOOR:.0%}", False, "no dense run"))
    else:
        worst = min(((f.get(b, math.nan), r["seed"], b) for r, f in zip(dense.runs, dense.finals) for b in s.buckets),
                    key=lambda t: t[0] if math.isfinite(t[0]) else -1.0, default=(math.nan, "0", (0, 0)))
        seen = (f"lowest {pct(worst[0])} (seed {worst[1]}, d = {worst[2][0]}-{worst[2][1] - 1})"
                if math.isfinite(worst[0]) else f"seed {worst[1]} has no final accuracy (diverged)")
        checks.append((f"dense >= {DENSE_FLOOR:.0%} in every bucket, every seed", worst[0] >= DENSE_FLOOR,
                       f"{seen}, {len(dense.runs)} seeds"))
    window, beyond = s.patterns.get("window"), [b for b in s.buckets if b[0] > s.reach]
    name = (f"window <= chance + {CHANCE_MARGIN * 100:.0f} points (or {CHANCE_SE} standard errors) beyond its "
            f"reach ({s.reach})")
    if window is None:
        checks.append((name, False, "no window run"))
    elif not beyond:
        checks.append((name, True, f"not applicable: its reach {s.reach} covers every distance"))
    else:
        over = [(f.get(b, math.nan) - chance_bound(s.chance, s.counts.get(b, 0)), f.get(b, math.nan), r["seed"], b)
                for r, f in zip(window.runs, window.finals) for b in beyond]
        worst = max(over, key=lambda t: t[0] if math.isfinite(t[0]) else math.inf)
        checks.append((name, worst[0] <= 0, f"highest {pct(worst[1])} against chance {pct(s.chance)} (seed {worst[2]}, "
                                            f"d = {worst[3][0]}-{worst[3][1] - 1}), {len(window.runs)} seeds"))
    return checks


def chance_bound(p, count):
    """The most a pattern that cannot see the answer (chance p) may score in a bucket of `count` positions."""
    if not count:
        return math.nan
    return p + max(CHANCE_MARGIN, CHANCE_SE * math.sqrt(p * (1 - p) / count))


def verdicts(s):
    """Each pattern against dense, bucket by bucket at the last step (seeds' means): 'matches dense'
    when no bucket is more than MATCH_MARGIN below, else the distances where it is."""
    dense, out = mean_final(s.patterns["dense"], s.buckets), []
    for p in s.patterns.values():
        if p.name == "dense":
            continue
        gaps = [(b, m - d) for b, m, d in zip(s.buckets, mean_final(p, s.buckets), dense)]
        behind = [(b, g) for b, g in gaps if not g >= -MATCH_MARGIN]
        if not behind:
            out.append(f"**{p.name} matches dense** at every distance (no bucket more than "
                       f"{MATCH_MARGIN * 100:.0f} points below; {len(p.runs)} seeds)")
        else:
            where = ", ".join(f"{lo}-{hi - 1}" for lo, hi in ranges([b for b, _ in behind], s.buckets))
            size = [g for _, g in behind if math.isfinite(g)]
            by = f" by {-max(size) * 100:.1f} to {-min(size) * 100:.1f} points" if size else ""
            out.append(f"**{p.name} is behind dense** at d = {where}{by} ({len(p.runs)} seeds)")
    return out


def mean_final(p, bounds):
    return [statistics.mean(f.get(b, math.nan) for f in p.finals) if p.finals else math.nan for b in bounds]


def ranges(chosen, bounds):
    """Consecutive buckets of `chosen` joined: [(lo of the first, hi of the last)]."""
    out = []
    for b in bounds:
        if b in chosen:
            if out and out[-1][1] == b[0]:
                out[-1] = (out[-1][0], b[1])
            else:
                out.append(b)
    return out


def learned_at(p, bucket):
    """The first evaluated step at which the seeds' mean accuracy in `bucket` reaches LEARNED, or None."""
    return next((step for step in sorted(p.curve) if p.curve[step].get(bucket, 0.0) >= LEARNED), None)


def pct(x):
    return f"{100 * x:.1f} %" if math.isfinite(x) else "nan"


def spread(values):
    """'mean (min-max)' in percent over seeds; 'nan' if any is missing or NaN."""
    if not values or not all(math.isfinite(v) for v in values):
        return "nan"
    mean = 100 * statistics.mean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ({100 * min(values):.1f}-{100 * max(values):.1f})"


def report(results_dir):
    """table.md and accuracy_SETTING.png for every setting in results_dir's CSVs."""
    settings = load(results_dir)
    lines = ["# Known-answer tasks: accuracy by distance", "",
             "Written by `python experiments/tasks.py --report_only` from runs.csv and accuracy.csv. Accuracy is "
             "the argmax at the scored positions of the held-out set, per bucket of answer distance d; a pattern's "
             "runs are its seeds at its chosen learning rate; 'mean (min-max)' over them, in percent.", "", "## Regime checks (written down before any run)", "",
             "| setting | check | passed | seen |", "| --- | --- | --- | --- |"]
    in_regime = {}
    for s in settings:
        checks = regime(s)
        in_regime[s.name] = all(ok for _, ok, _ in checks)
        lines += [f"| {s.name} | {c} | {'yes' if ok else '**no**'} | {seen} |" for c, ok, seen in checks]
    lines += ["", "A setting that fails a check is **not in regime**: its numbers are shown, and no verdict is drawn."]
    for s in settings:
        lines += section(s, in_regime[s.name])
        if importlib.util.find_spec("matplotlib"):
            figure(s, os.path.join(results_dir, f"accuracy_{s.name}.png"))
            lines += ["", f"![accuracy over training](accuracy_{s.name}.png)"]
    write_atomic(os.path.join(results_dir, "table.md"), "\n".join(lines) + "\n")
    print(f"wrote {os.path.join(results_dir, 'table.md')}")


def section(s, ok):
    names = list(s.patterns)
    lines = ["", f"## {s.task}, {s.n_head} heads (N = {s.block_size}, band width N/H = {s.block_size // s.n_head}, "
                 f"window's reach {s.n_layer} x {s.reach // s.n_layer} = {s.reach}, chance {pct(s.chance)})", ""]
    lines += verdicts(s) if ok and "dense" in s.patterns else ["**Not in regime: no verdict.**"]
    lines += ["", "Final accuracy by distance, % (seeds, lr):", "",
              "| d | " + " | ".join(f"{n} ({len(s.patterns[n].runs)}, {s.patterns[n].lr})" for n in names) + " |",
              "| --- |" + " ---: |" * len(names)]
    for b in s.buckets:
        lines.append(f"| {b[0]}-{b[1] - 1} | " + " | ".join(spread([f.get(b, math.nan) for f in s.patterns[n].finals])
                                                             for n in names) + " |")
    lines += ["", f"When each pattern learns each distance: the first evaluated step at which the seeds' mean "
                  f"reaches {LEARNED:.0%} ('-': not by the last step):", "",
              "| d | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for b in s.buckets:
        lines.append(f"| {b[0]}-{b[1] - 1} | " + " | ".join(str(learned_at(s.patterns[n], b) or "-") for n in names)
                     + " |")
    lines += ["", "Learning-rate sweep (seed 0, final accuracy over all scored positions) and training speed:", "",
              "| pattern | sweep | chosen | tokens/s |", "| --- | --- | --- | ---: |"]
    for p in s.patterns.values():
        rates = sorted(p.sweep, key=float)
        edge = " (an edge of its sweep)" if len(rates) > 1 and p.lr in (rates[0], rates[-1]) else ""
        speeds = [float(r["tokens_per_s"]) for r in p.runs if r["tokens_per_s"]]
        speed = f"{statistics.median(speeds) / 1e6:.2f} M" if speeds else "-"
        lines.append(f"| {p.name} | " + ", ".join(f"{lr}: {pct(acc)}" for lr, acc in p.sweep.items())
                     + f" | {p.lr}{edge} | {speed} |")
    return lines


def figure(s, path):
    """Accuracy over training, a panel per pattern, a line per distance bucket (darker: nearer)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(s.patterns), figsize=(3.2 * len(s.patterns), 3.2), sharey=True, squeeze=False)
    colors = plt.get_cmap("viridis")
    for ax, p in zip(axes[0], s.patterns.values()):
        steps = sorted(p.curve)
        for k, b in enumerate(s.buckets):
            beyond = p.name == "window" and b[0] > s.reach  # dashed: window cannot see that far
            ax.plot(steps, [p.curve[t].get(b, math.nan) for t in steps], color=colors(k / max(1, len(s.buckets) - 1)),
                    lw=1.2, ls="--" if beyond else "-", label=f"{b[0]}-{b[1] - 1}" if k in (0, len(s.buckets) - 1) else None)
        ax.axhline(s.chance, color="grey", ls=":", lw=1)
        ax.axhline(LEARNED, color="grey", ls="-.", lw=0.8)
        ax.set_title(f"{p.name} ({len(p.runs)} seeds)" + (f", reach {s.reach}" if p.name == "window" else ""), fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("accuracy (mean over seeds)")
    axes[0][0].legend(title="distance", fontsize=7, title_fontsize=7, loc="center right")
    fig.suptitle(f"{s.task}, {s.n_head} heads, N = {s.block_size}: accuracy by answer distance over training", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -----------------------------------------------------------------------------
# The command line

def parse_args(argv):
    """Options from --key=value arguments (--dry_run alone means True); a ConfigError names the first
    that cannot work."""
    fields = {f.name: f.default for f in dataclasses.fields(Options)}
    values = {}
    for arg in argv:
        key, eq, text = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key not in fields:
            raise ConfigError(f"unknown option {arg!r}: python experiments/tasks.py --help lists the options")
        if not eq and isinstance(fields[key], bool):
            eq, text = "=", "true"
        if not eq:
            raise ConfigError(f"argument {arg!r} must look like --{key}=value")
        default = fields[key]
        if isinstance(default, tuple):
            values[key] = tuple(utils.parse_value(key, t, type(default[0])) for t in text.split(",") if t)
        else:
            values[key] = utils.parse_value(key, text, type(default))
    o = Options(**values)
    check_options(o)
    return o


def check_options(o):
    """Raise a ConfigError naming the first option that cannot work, before anything slow happens."""
    for name, allowed in (("tasks", TASKS), ("patterns", ATTN_PATTERNS)):
        bad = [v for v in getattr(o, name) if v not in allowed] or ([] if getattr(o, name) else ["(none)"])
        if bad:
            raise ConfigError(f"--{name}: {bad[0]!r} is not one of {', '.join(allowed)}")
    if not o.heads or not o.lr_sweep or min(o.lr_sweep) <= 0:
        raise ConfigError("--heads needs one head count at least and --lr_sweep positive rates")
    for name in ("seeds", "n_layer", "n_embd", "steps", "batch_size", "eval_interval", "eval_sequences", "bucket",
                 "span", "n_queries", "min_distance"):
        if getattr(o, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(o, name)}")
    if not 0 <= o.warmup_frac < 1 or o.max_minutes < 0 or o.grad_clip <= 0:
        raise ConfigError("--warmup_frac must be in [0, 1), --max_minutes >= 0 and --grad_clip > 0")
    if o.min_distance > o.block_size - 2:
        raise ConfigError(f"--min_distance={o.min_distance} leaves no answer distance in [min_distance, block_size-2] "
                          f"at block_size={o.block_size}")
    if "copy" in o.tasks and o.span > min(o.min_distance, SPAN[1] - SPAN[0]):
        raise ConfigError(f"--span={o.span} is more than --min_distance={o.min_distance} (the repeat must start after "
                          f"the span) or than the {SPAN[1] - SPAN[0]} span tokens")
    if "mqar" in o.tasks and o.n_queries > min(max(1, o.block_size // 64), KEYS[1] - KEYS[0]):
        raise ConfigError(f"--n_queries={o.n_queries} is more than block_size // 64 = {o.block_size // 64} (more would "
                          f"crowd the sequence and leave queries out unevenly) or than the {KEYS[1] - KEYS[0]} keys")
    if o.dry_run + o.report_only + o.throughput > 1:
        raise ConfigError("--dry_run, --report_only and --throughput each do one thing: give one of them")
    for H in o.heads:
        GPTConfig(n_layer=o.n_layer, n_head=H, n_embd=o.n_embd, block_size=o.block_size, vocab_size=VOCAB)
    pick_device(o)


def usage():
    """The docstring's commands, then every option with its default and the comment beside it in Options."""
    lines = []
    for line in inspect.getsource(Options).splitlines()[2:]:
        code, _, comment = line.strip().partition("#")
        name = code.split(":")[0].strip()
        if name in Options.__dataclass_fields__:
            default = getattr(Options, name)
            text = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
            lines.append(f"  {f'--{name}={text}':<44} {comment.strip()}".rstrip())
        elif comment:
            lines.append(f" {comment.strip()}:")
    return "\n".join(["usage: python experiments/tasks.py [--key=value ...]", "", __doc__.strip().split("\n\n")[1], "",
                      "options (default):"] + lines)


def main(argv):
    if "-h" in argv or "--help" in argv:
        print(usage())
        return
    with utils.one_line_errors(ctrl_c="Ctrl-C: stopped; checkpoints at the last evaluation stay, and the same "
                                      "command continues"):
        o = parse_args(argv)
        if o.dry_run:
            show_plan(o)
        elif o.throughput:
            measure_throughput(o)
        elif o.report_only:
            report(o.results_dir)
        else:
            run_experiment(o)
            if os.path.exists(os.path.join(o.results_dir, "runs.csv")):
                report(o.results_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
