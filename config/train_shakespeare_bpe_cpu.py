# A small SPAttention GPT on Tiny Shakespeare in GPT-2 BPE tokens for a CPU:
# 4 layers, 4 heads, 128 wide, context 128 tokens (each head's own band is 32 distances wide).
# On CPU GPT-2's 50304-way output layer dominates the cost (~1-4 s per iteration on 2 cores).
# Prepare with `python data/shakespeare/prepare.py` (offline).

out_dir = 'out-shakespeare-bpe-cpu'
eval_interval = 50
eval_iters = 20
log_interval = 10

dataset = 'shakespeare'
gradient_accumulation_steps = 1
batch_size = 8
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
attn = 'sp'

learning_rate = 1e-3
max_iters = 300
lr_decay_iters = 300
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 30

device = 'cpu'
compile = False
