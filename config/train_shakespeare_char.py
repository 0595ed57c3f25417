# The baby GPT of nanoGPT on Tiny Shakespeare, characters, with SPAttention: 6 layers, 6 heads,
# 384 wide, context 256. Each head sees its own band of ~43 distances plus the shared local window.
# About 3 minutes on one H100 (with compile); for the baseline, --attn=dense
# --out_dir=out-shakespeare-char-dense. On a laptop CPU it takes a day or more: use
# config/train_shakespeare_char_cpu.py there.

out_dir = 'out-shakespeare-char'
eval_interval = 250  # the baby model overfits, so evaluate often
eval_iters = 200
log_interval = 10

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # context of up to 256 previous characters

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2
attn = 'sp'

learning_rate = 1e-3  # a small network can take a high learning rate
max_iters = 5000
lr_decay_iters = 5000  # usually max_iters
min_lr = 1e-4  # learning_rate / 10
beta2 = 0.99  # larger because few tokens per iteration
warmup_iters = 100
