# The baby GPT at context 1024 with SPAttention on the Python standard library's source in GPT-2 BPE
# (data/pystdlib: ~14.4M train / ~0.5M val tokens on CPython 3.11, split by file; documents are
# whole files, median ~3k tokens, so a 1024-token window sees real long-range structure: code that
# uses names defined far above). Prepare with `python data/pystdlib/prepare.py` (offline, ~5 s;
# train.py also runs it when train.bin is missing). vocab_size is not set (GPT-2's, padded to 50304).
# With 6 heads over 1024 distances each head's own band is ~170 distances wide; try --attn=dense
# --out_dir=out-pystdlib-dense for the baseline. 32k tokens per iteration, 5000 iterations ~ 11
# passes over the train split.

out_dir = 'out-pystdlib'
eval_interval = 250
eval_iters = 100
log_interval = 10

dataset = 'pystdlib'
gradient_accumulation_steps = 2
batch_size = 16
block_size = 1024

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.1
attn = 'sp'

learning_rate = 1e-3
max_iters = 5000
lr_decay_iters = 5000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 200
