# The baby GPT trained from scratch (no finetuning) on Tiny Shakespeare in GPT-2 BPE tokens, with
# SPAttention. Prepare with `python data/shakespeare/prepare.py` (offline; train.py also runs it when
# train.bin is missing). ~302k train tokens, so it overfits: watch val loss, evaluate often.
# vocab_size is not set: with no meta.pkl train.py uses GPT-2's 50257 padded to 50304.
# Context 512 tokens; with 6 heads each head's own band is ~85 distances wide.

out_dir = 'out-shakespeare-bpe'
eval_interval = 250
eval_iters = 100
log_interval = 10

dataset = 'shakespeare'
gradient_accumulation_steps = 1
batch_size = 32
block_size = 512

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2
attn = 'sp'

learning_rate = 1e-3
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
