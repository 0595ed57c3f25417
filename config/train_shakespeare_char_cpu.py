# A small SPAttention GPT on Tiny Shakespeare that learns on a laptop CPU in a few minutes:
# 4 layers, 4 heads, 128 wide, context 64 (each head's own band is 16 distances wide).
# The baby GPT of config/train_shakespeare_char.py (13x the parameters, 4x the context, 5x the batch,
# 2.5x the iterations) is about 700x this run's training FLOPs (GPT.flops_per_token): a GPU's job.
# Evaluations are short (eval_iters = 20), so the first losses appear within seconds.

out_dir = 'out-shakespeare-char-cpu'
eval_interval = 250
eval_iters = 20
log_interval = 50

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 12
block_size = 64

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
attn = 'sp'

learning_rate = 1e-3
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100

device = 'cpu'
compile = False
