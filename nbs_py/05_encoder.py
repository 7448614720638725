# %% [markdown]
# # Sequence encoder
# > A SASRec-style causal Transformer: right-aligned learned positions, causal and padding masks, pre-LayerNorm blocks, PyTorch's fused attention.

# %%
#| default_exp encoder

# %%
#| export
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from sagerec.core import check

# %%
#| hide
from fastcore.test import test_close, test_eq, test_fail

from sagerec.core import SageRecError, seed_everything


# %% [markdown]
# ## Masks
#
# Sequences are left-padded with item 0, so a batch row looks like `[0, 0, 0, v1, v2, v3]`. Query $t$ may attend
# to key $s$ when $s \le t$ (causal) and key $s$ is a real item (padding). A padding query then has no key at
# all, and a softmax over nothing is `NaN`; so every query may also attend to **itself**. For a real item that
# changes nothing (it is a valid earlier-or-equal key anyway); a padding query gets a finite, ignored output.

# %%
#| export
def attention_mask(valid: Tensor,  # (B, L) bool, True at real items
                  ) -> Tensor:  # (B, 1, L, L) bool, True where query t may attend to key s
    "Causal + key-padding mask for `F.scaled_dot_product_attention`; each query also sees itself (no empty rows)."
    L = valid.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()  # (L, L)
    self_ = torch.eye(L, dtype=torch.bool, device=valid.device)  # (L, L)
    return causal & (valid[:, None, None, :] | self_)  # (B, 1, L, L)


# %%
valid = torch.tensor([[False, False, True, True], [True, True, True, True]])
m = attention_mask(valid)
m[0, 0].int()

# %%
test_eq(m.shape, (2, 1, 4, 4))
test_eq(m[0, 0].int().tolist(), [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])  # pads see only themselves
test_eq(m[1, 0], torch.ones(4, 4, dtype=torch.bool).tril())  # a full row is plain causal
assert m.any(-1).all()  # no query with an empty row


# %% [markdown]
# ## Packed tokens: no compute on padding
#
# Most of a left-padded batch is padding (Beauty: about 9 items per user against a width of up to 50), and every
# position-wise part of a block (LayerNorm, projections, FFN, dropout) would spend most of its time on it. So the
# encoder works on **packed tokens**: the n real items of the batch as an (n, D) matrix, in row-major order.
#
# Only attention needs a (rows, width) layout. With `bucketed=True` the rows are grouped by length (1, 2, 3-4,
# 5-8, 9-16, ... items) and each group is attended at its own width, so a batch of mostly short sequences with a
# few long ones does not pay $L^2$ for every row: the projected queries, keys and values of a group are
# scattered into a zero (B_g, L_g, .) tensor, attended with the mask above, and gathered back. Rows are
# independent in attention, so grouping changes no value. With `bucketed=False` the whole batch is one group
# (fewer, larger kernel calls: better on a GPU). Padding positions are never computed and come out as zeros.

# %%
#| export
class Packing:
    "Where the real items of a left-padded (B, L) batch sit, and how attention groups the rows."
    def __init__(self,
                 valid: Tensor,  # (B, L) bool, True at real items (left-padded rows)
                 bucketed: bool = False,  # attend rows in groups of similar length
                ):
        self.valid = valid
        self.B, self.L = valid.shape
        self.flat = valid.reshape(-1).nonzero().squeeze(1)  # (n,) indices into the flattened (B*L) batch
        self.groups, self.order = self._groups(bucketed)

    def _groups(self, bucketed: bool) -> tuple[list, Tensor | None]:
        "Attention groups (tokens, local index, rows, width, mask) and the permutation that restores token order."
        lengths = self.valid.sum(1)  # (B,)
        if not bucketed or self.n == 0: return [(None, self.flat, self.B, self.L, attention_mask(self.valid))], None
        dev = self.valid.device
        row, from_end = self.flat // self.L, self.L - 1 - self.flat % self.L  # (n,), (n,)
        bucket = torch.ceil(torch.log2(lengths.clamp_min(1).float())).long().masked_fill(lengths == 0, -1)  # (B,)
        groups, toks = [], []
        for b in bucket.unique().tolist():
            if b < 0: continue
            rows = (bucket == b).nonzero().squeeze(1)  # (B_g,)
            Lg = int(lengths[rows].max())
            slot = torch.full((self.B,), -1, dtype=torch.long, device=dev).index_copy(0, rows, torch.arange(len(rows), device=dev))
            tok = (slot[row] >= 0).nonzero().squeeze(1)  # (n_g,) packed tokens of this group
            local = slot[row[tok]] * Lg + (Lg - 1 - from_end[tok])  # (n_g,) index into the (B_g * L_g) layout
            valid_g = torch.arange(Lg, device=dev)[None] >= (Lg - lengths[rows])[:, None]  # (B_g, L_g)
            groups.append((tok, local, len(rows), Lg, attention_mask(valid_g)))
            toks.append(tok)
        return groups, torch.argsort(torch.cat(toks))

    @property
    def n(self) -> int: return self.flat.shape[0]

    def columns(self) -> Tensor: return self.flat % self.L  # (n,) column of each real item

    def pack(self, x: Tensor) -> Tensor:  # (B, L, C) -> (n, C)
        return x.reshape(self.B * self.L, -1).index_select(0, self.flat)

    def unpack(self, xp: Tensor) -> Tensor:  # (n, C) -> (B, L, C), zeros at padding
        return xp.new_zeros(self.B * self.L, xp.shape[-1]).index_copy(0, self.flat, xp).view(self.B, self.L, -1)


# %%
valid = torch.tensor([[False, True, True], [False, False, True]])
pk = Packing(valid)
xb = torch.arange(6.).view(2, 3, 1)
pk.flat, pk.pack(xb).squeeze(1), pk.unpack(pk.pack(xb)).squeeze(-1)

# %%
test_eq(pk.n, 3); test_eq(pk.columns(), torch.tensor([1, 2, 2]))
test_eq(pk.pack(xb).squeeze(1), torch.tensor([1., 2., 5.]))
test_eq(pk.unpack(pk.pack(xb)).squeeze(-1), torch.tensor([[0., 1., 2.], [0., 0., 5.]]))

# %% [markdown]
# Bucketed, a batch with lengths 1, 6, 2, 0 and 5 (width 6) is attended as three groups: widths 1, 2 and 6
# (lengths 5 and 6 share the 5-8 bucket); the empty row is in none.

# %%
lengths = torch.tensor([1, 6, 2, 0, 5])
vb = torch.arange(6)[None] >= (6 - lengths)[:, None]  # (5, 6) left-padded
pkb = Packing(vb, bucketed=True)
[(Bg, Lg, mask.shape) for _, _, Bg, Lg, mask in pkb.groups]

# %%
test_eq([(Bg, Lg) for _, _, Bg, Lg, _ in pkb.groups], [(1, 1), (1, 2), (2, 6)])
test_eq(sorted(torch.cat([t for t, *_ in pkb.groups]).tolist()), list(range(pkb.n)))  # every token in one group
test_eq(torch.cat([t for t, *_ in pkb.groups])[pkb.order], torch.arange(pkb.n))  # `order` restores token order


# %% [markdown]
# ## Blocks
#
# Multi-head self-attention uses `F.scaled_dot_product_attention`, which dispatches to a fused kernel
# (flash / memory-efficient on GPU, a fused CPU kernel) when one applies, and to the reference math otherwise.
# A block is pre-LayerNorm, as in the paper:
# $H = X + \mathrm{MHA}(\mathrm{LN}(X))$, $X' = H + \mathrm{FFN}(\mathrm{LN}(H))$, with
# $\mathrm{FFN}(x) = \max(0, xW_1 + b_1)W_2 + b_2$ of width $d$ (as SASRec). Dropout (one rate, as SASRec) acts on
# the attention probabilities, on the attention output, after the ReLU and on the FFN output. All of it runs on
# packed tokens.
#
# The reference implementations differ in small ways, and each is a switch here so that it can be measured
# (`nbs/recipe.ipynb`): the S3-Rec/ICLRec family uses an FFN of width $4d$ with GELU (`ffn_mult=4`,
# `activation="gelu"`) and no dropout after the activation (`ffn_inner_dropout=False`); SASRec's code has no
# dropout on the attention output (`attn_out_dropout=False`); and the S3-Rec/ICLRec family's block is
# **post-LayerNorm** (`norm="post"`): $H = \mathrm{LN}(X + \mathrm{MHA}(X))$, $X' = \mathrm{LN}(H + \mathrm{FFN}(H))$.
# The defaults are this project's first reading: pre-LayerNorm, four dropouts per block.

# %%
#| export
class SelfAttention(nn.Module):
    "Multi-head self-attention with an output projection, on PyTorch's fused attention, for packed tokens."
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        check(dim % n_heads == 0, f"dim={dim} is not divisible by n_heads={n_heads}: pick n_heads that divides dim.")
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)  # W_Q, W_K, W_V stacked
        self.out = nn.Linear(dim, dim)  # W_O

    def forward(self, xp: Tensor, pk: Packing) -> Tensor:  # (n, D) -> (n, D)
        D, H = xp.shape[-1], self.n_heads
        qkv = self.qkv(xp)  # (n, 3D)
        parts = []
        for tok, local, Bg, Lg, mask in pk.groups:
            z = qkv if tok is None else qkv.index_select(0, tok)  # (n_g, 3D)
            z = z.new_zeros(Bg * Lg, 3 * D).index_copy(0, local, z).view(Bg, Lg, 3, H, D // H).permute(2, 0, 3, 1, 4)  # 3 x (B_g, H, L_g, D/H)
            y = F.scaled_dot_product_attention(z[0], z[1], z[2], attn_mask=mask,
                                               dropout_p=self.dropout if self.training else 0.0)  # (B_g, H, L_g, D/H)
            parts.append(y.transpose(1, 2).reshape(Bg * Lg, D).index_select(0, local))  # (n_g, D)
        y = parts[0] if pk.order is None else torch.cat(parts).index_select(0, pk.order)  # (n, D)
        return self.out(y)  # (n, D)

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}

class FeedForward(nn.Module):
    "Position-wise FFN: Linear (d -> mult*d), activation, [dropout], Linear (-> d), dropout. SASRec: mult 1, ReLU."
    def __init__(self, dim: int, dropout: float, mult: int = 1, activation: str = "relu", inner_dropout: bool = True):
        super().__init__()
        check(activation in ACTIVATIONS, f"activation={activation!r}: use one of {sorted(ACTIVATIONS)}.")
        check(int(mult) >= 1, f"ffn_mult={mult} must be an integer >= 1.")
        h = dim * int(mult)
        self.net = nn.Sequential(nn.Linear(dim, h), ACTIVATIONS[activation](), nn.Dropout(dropout if inner_dropout else 0.0),
                                 nn.Linear(h, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor: return self.net(x)  # (n, D)

NORMS = ("pre", "post")

class Block(nn.Module):
    "Transformer block, pre-LayerNorm ($H = X + \\mathrm{MHA}(\\mathrm{LN}(X))$, ...) or post-LayerNorm ($H = \\mathrm{LN}(X + \\mathrm{MHA}(X))$, ...)."
    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_mult: int = 1, activation: str = "relu",
                 attn_out_dropout: bool = True, ffn_inner_dropout: bool = True, norm: str = "pre"):
        super().__init__()
        check(norm in NORMS, f"norm={norm!r}: use one of {NORMS}.")
        self.post = norm == "post"
        self.ln1, self.attn = nn.LayerNorm(dim), SelfAttention(dim, n_heads, dropout)
        self.drop = nn.Dropout(dropout if attn_out_dropout else 0.0)
        self.ln2, self.ffn = nn.LayerNorm(dim), FeedForward(dim, dropout, ffn_mult, activation, ffn_inner_dropout)

    def forward(self, xp: Tensor, pk: Packing) -> Tensor:  # (n, D) -> (n, D)
        if self.post:  # S3-Rec / ICLRec code
            xp = self.ln1(xp + self.drop(self.attn(xp, pk)))  # (n, D)
            return self.ln2(xp + self.ffn(xp))  # (n, D)
        xp = xp + self.drop(self.attn(self.ln1(xp), pk))  # (n, D)
        return xp + self.ffn(self.ln2(xp))  # (n, D)


# %% [markdown]
# ## The encoder
#
# Input: the item embeddings of a left-padded batch, (B, L, D), and which positions are real (or, with
# `forward_packed`, the real items' embeddings already packed, which saves looking up padding). The embeddings
# are scaled by $\sqrt d$ (SASRec's reference code does this; the paper's $x_t = z_{v_t} + p_t$ does not say,
# so `scale_input` switches it), the learned positional embedding is added, then dropout, the blocks and a
# final LayerNorm. With post-LayerNorm blocks (`norm="post"`) the one LayerNorm moves to the input, as in the
# S3-Rec/ICLRec code: $\mathrm{Dropout}(\mathrm{LN}(z + p))$ in, the last block's output out.
#
# **Positions are right-aligned**: with `max_len` positions, the last column of a batch always gets position
# `max_len - 1`, the one before `max_len - 2`, and so on. The position of an item then depends only on how far
# it is from the end of the sequence, not on how wide the batch is, so a batch trimmed to its longest
# sequence gives the same outputs (the trainer relies on this to skip padding). `use_position=False` removes
# the positional embedding (ablation E).

# %%
#| export
class SASRecEncoder(nn.Module):
    "Causal Transformer over left-padded item embeddings, with right-aligned learned positions."
    def __init__(self,
                 dim: int = 50,  # d, embedding width (paper: 50)
                 n_blocks: int = 2,  # Transformer blocks (paper: 2)
                 n_heads: int = 1,  # attention heads (paper: unspecified; SASRec: 1)
                 dropout: float = 0.5,  # one rate for embeddings, attention and FFN (SASRec: 0.5 Amazon, 0.2 ML-1M)
                 max_len: int = 50,  # positions (paper: 50 Beauty/Toys, 165 ML-1M)
                 use_position: bool = True,  # learned positional embedding (False: ablation E)
                 scale_input: bool = True,  # multiply item embeddings by sqrt(d) (SASRec's code)
                 length_buckets: bool | None = None,  # attend rows grouped by length (None: on CPU, not on GPU)
                 ffn_mult: int = 1,  # FFN width as a multiple of d (SASRec: 1; S3-Rec family: 4)
                 activation: str = "relu",  # FFN activation, 'relu' (SASRec) or 'gelu' (S3-Rec family)
                 attn_out_dropout: bool = True,  # dropout on the attention output (SASRec's code: none)
                 ffn_inner_dropout: bool = True,  # dropout after the FFN activation (S3-Rec family: none)
                 norm: str = "pre",  # "pre"-LayerNorm blocks and a final LayerNorm (paper), or "post" (S3-Rec family)
                ):
        super().__init__()
        check(norm in NORMS, f"norm={norm!r}: use one of {NORMS}.")
        self.dim, self.max_len, self.scale_input, self.length_buckets = dim, max_len, scale_input, length_buckets
        self.post = norm == "post"
        self.pos_emb = nn.Embedding(max_len, dim) if use_position else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout, ffn_mult, activation, attn_out_dropout, ffn_inner_dropout, norm)
                                    for _ in range(n_blocks))
        self.ln = nn.LayerNorm(dim)

    def packing(self, valid: Tensor) -> Packing:  # (B, L) bool
        "The `Packing` of a batch, bucketed by length as `length_buckets` says (auto: on CPU only)."
        b = self.length_buckets if self.length_buckets is not None else valid.device.type == "cpu"
        return Packing(valid, bucketed=b)

    def forward_packed(self,
                       xp: Tensor,  # (n, D) embeddings of the real items, row-major over the batch
                       pk: Packing,  # where they sit in the (B, L) batch
                      ) -> Tensor:  # (n, D) hidden state of each real item
        "The encoder on packed tokens."
        check(pk.L <= self.max_len, f"The batch has {pk.L} positions but the encoder has max_len={self.max_len}: keep only "
                                    f"the last {self.max_len} items of each sequence (or build the model with a larger max_len).")
        if self.scale_input: xp = xp * self.dim ** 0.5
        if self.pos_emb is not None: xp = xp + self.pos_emb(pk.columns() + (self.max_len - pk.L))  # (n, D) right-aligned
        xp = self.drop(self.ln(xp) if self.post else xp)  # (n, D)
        for block in self.blocks: xp = block(xp, pk)  # (n, D)
        return xp if self.post else self.ln(xp)  # (n, D)

    def forward(self,
                x: Tensor,  # (B, L, D) item embeddings of a left-padded batch, L <= max_len
                valid: Tensor,  # (B, L) bool, True at real items
               ) -> Tensor:  # (B, L, D) hidden state per position, 0 at padding
        pk = self.packing(valid)
        return pk.unpack(self.forward_packed(pk.pack(x), pk))


# %%
seed_everything(0)
enc = SASRecEncoder(dim=8, n_blocks=2, n_heads=2, dropout=0.2, max_len=6).eval().requires_grad_(False)  # values only
x = torch.randn(3, 5, 8)  # (B, L, D)
valid = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
h = enc(x, valid)
h.shape, h[0, :, :3]

# %%
test_eq(h.shape, (3, 5, 8))
test_eq(h[~valid], torch.zeros(int((~valid).sum()), 8))  # padding outputs are exactly zero
assert torch.isfinite(h).all()
test_eq(sum(p.numel() for p in enc.pos_emb.parameters()), 6 * 8)
test_close(enc.forward_packed(Packing(valid).pack(x), Packing(valid)), h[valid], eps=1e-6)  # the packed entry point, one group


# %% [markdown]
# **Packing changes nothing**: the same weights applied to every position of the padded batch (SASRec's way,
# zeroing padding after each block) give the same outputs at the real items.

# %%
def padded_reference(enc, x, valid):
    "The encoder's computation on the full padded batch, every position computed (eval mode, for checking)."
    B, L, D = x.shape
    keep, mask, H = valid[..., None].float(), attention_mask(valid), enc.blocks[0].attn.n_heads
    x = (x * D ** 0.5 + enc.pos_emb.weight[enc.max_len - L:]) * keep  # (B, L, D)
    for b in enc.blocks:
        q, k, v = b.attn.qkv(b.ln1(x)).view(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, D/H)
        x = x + b.attn.out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, L, D))
        x = (x + b.ffn(b.ln2(x))) * keep
    return enc.ln(x) * keep

ref = padded_reference(enc, x, valid)
(ref - h).abs().max()

# %%
test_close(ref, h, eps=1e-5)

# %% [markdown]
# **Length buckets change nothing** either: a batch of 40 rows with lengths from 0 to 6, attended in length
# groups and as one padded group, in evaluation mode.

# %%
seed_everything(1)
lens = torch.randint(0, 7, (40,))
vl = torch.arange(6)[None] >= (6 - lens)[:, None]  # (40, 6)
xl = torch.randn(40, 6, 8)
enc.length_buckets = True; hb = enc(xl, vl)
enc.length_buckets = False; h1 = enc(xl, vl)
enc.length_buckets = None  # back to auto
len(enc.packing(vl).groups), (hb - h1).abs().max()

# %%
test_close(hb, h1, eps=1e-5)
assert len(Packing(vl, bucketed=True).groups) >= 3

# %% [markdown]
# **Causality**: changing a later item leaves every earlier output unchanged (evaluation mode, no dropout).

# %%
x2 = x.clone(); x2[:, 3] = torch.randn(3, 8)  # change the item at column 3
h2 = enc(x2, valid)
(h2 - h).abs().amax(-1)  # per position: only columns 3 and after move

# %%
test_close(h2[:, :3], h[:, :3], eps=1e-6)
assert (h2[:, 3:][valid[:, 3:]] - h[:, 3:][valid[:, 3:]]).abs().amax() > 1e-3

# %% [markdown]
# **Padding invariance**: whatever sits at padding positions has no effect on real positions, and a batch
# trimmed of its leading all-padding columns gives the same outputs (right-aligned positions).

# %%
x3 = x.clone(); x3[~valid] = 100 * torch.randn(int((~valid).sum()), 8)  # garbage at padding
h3 = enc(x3, valid)
h_rows = enc(x[[0, 2]][:, 2:], valid[[0, 2]][:, 2:])  # rows 0 and 2 only need the last 3 columns
(h3 - h).abs().max(), (h_rows - h[[0, 2]][:, 2:]).abs().max()

# %%
test_close(h3, h, eps=1e-6)
test_close(h_rows, h[[0, 2]][:, 2:], eps=1e-5)
test_close(enc(x[2:, 4:], valid[2:, 4:]), h[2:, 4:], eps=1e-5)  # a one-item sequence alone


# %% [markdown]
# **Post-LayerNorm** (`norm="post"`, the S3-Rec/ICLRec block) has exactly the same parameters; it moves the free
# LayerNorm from the output to the input. Packing and length buckets stay exact for it too (it is checked
# against the padded computation, every position computed), and it stays causal.

# %%
def padded_post_reference(enc, x, valid):
    "`padded_reference` for post-LayerNorm blocks."
    B, L, D = x.shape
    keep, mask, H = valid[..., None].float(), attention_mask(valid), enc.blocks[0].attn.n_heads
    x = enc.ln(x * D ** 0.5 + enc.pos_emb.weight[enc.max_len - L:]) * keep  # (B, L, D)
    for b in enc.blocks:
        q, k, v = b.attn.qkv(x).view(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, D/H)
        x = b.ln1(x + b.attn.out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, L, D)))
        x = b.ln2(x + b.ffn(x)) * keep
    return x

seed_everything(0)
enc_post = SASRecEncoder(dim=8, n_blocks=2, n_heads=2, dropout=0.2, max_len=6, norm="post").eval().requires_grad_(False)
enc_post.length_buckets = True; hp = enc_post(xl, vl)
enc_post.length_buckets = False; hp1 = enc_post(xl, vl)
n_pre, n_post = (sum(p.numel() for p in e.parameters()) for e in (enc, enc_post))
(hp - padded_post_reference(enc_post, xl, vl)).abs().max(), (hp - hp1).abs().max(), (n_pre, n_post)

# %%
test_close(hp, padded_post_reference(enc_post, xl, vl), eps=1e-5)
test_close(hp, hp1, eps=1e-5)
test_eq(n_pre, n_post)
hp_x, hp_x2 = enc_post(x, valid), enc_post(x2, valid)  # x2: the item at column 3 changed
test_close(hp_x2[:, :3], hp_x[:, :3], eps=1e-6)
assert (hp_x - h)[valid].abs().amax() > 1e-3  # a different function of the same kind of weights
test_fail(lambda: SASRecEncoder(dim=8, norm="sandwich"), contains="norm='sandwich'")

# %% [markdown]
# **No NaN from empty rows**: an all-padding sequence (a user with no history) gives zeros, in training mode
# too, and gradients stay finite.

# %%
enc.train().requires_grad_(True)
xe = torch.randn(2, 5, 8, requires_grad=True)
he = enc(xe, torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool))
he.sum().backward()
he[0].abs().max(), torch.isfinite(xe.grad).all()

# %%
test_eq(he[0].detach(), torch.zeros(5, 8))
assert torch.isfinite(he).all() and torch.isfinite(xe.grad).all()
enc.eval().requires_grad_(False);

# %% [markdown]
# **Without positions** (ablation E) there is no positional parameter, and with one block the last output
# treats the earlier items as a set: swapping two of them changes nothing. With positions it does.

# %%
seed_everything(0)
nopos = SASRecEncoder(dim=8, n_blocks=1, max_len=6, use_position=False, dropout=0.0).eval().requires_grad_(False)
withpos = SASRecEncoder(dim=8, n_blocks=1, max_len=6, dropout=0.0).eval().requires_grad_(False)
xs, vs = torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool)
swapped = xs[:, [1, 0, 2, 3]]  # swap the first two items
[n for n, _ in nopos.named_parameters() if "pos" in n], (nopos(swapped, vs) - nopos(xs, vs))[0, -1].abs().max(), (withpos(swapped, vs) - withpos(xs, vs))[0, -1].abs().max()

# %%
test_eq(nopos.pos_emb, None)
test_close(nopos(swapped, vs)[0, -1], nopos(xs, vs)[0, -1], eps=1e-5)  # one block, no positions: a set
assert (withpos(swapped, vs) - withpos(xs, vs))[0, -1].abs().max() > 1e-3

# %% [markdown]
# **The reference recipes' blocks**: `ffn_mult=4, activation="gelu"` gives the S3-Rec family's FFN ($d \to 4d \to d$);
# switching a dropout site off leaves the others, and in evaluation mode no switch changes the function's shape.

# %%
s3 = SASRecEncoder(dim=8, n_blocks=1, max_len=6, ffn_mult=4, activation="gelu", ffn_inner_dropout=False)
ffn = s3.blocks[0].ffn.net
[tuple(m.weight.shape) for m in ffn if isinstance(m, nn.Linear)], type(ffn[1]).__name__, ffn[2].p, s3.blocks[0].drop.p

# %%
test_eq([tuple(m.weight.shape) for m in ffn if isinstance(m, nn.Linear)], [(32, 8), (8, 32)])
test_eq((type(ffn[1]), ffn[2].p, ffn[4].p, s3.blocks[0].drop.p), (nn.GELU, 0.0, 0.5, 0.5))
test_eq(SASRecEncoder(dim=8, n_blocks=1, attn_out_dropout=False).blocks[0].drop.p, 0.0)
test_fail(lambda: SASRecEncoder(dim=8, activation="tanh"), contains="activation='tanh'")

# %% [markdown]
# ## Errors a user can act on

# %%
test_fail(lambda: enc(torch.randn(1, 7, 8), torch.ones(1, 7, dtype=torch.bool)), contains="max_len=6")
test_fail(lambda: SASRecEncoder(dim=50, n_heads=3), contains="not divisible by n_heads=3")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
