#!/usr/bin/env python3
"""PyTorch reference for the `shapewise bench` training-throughput benchmark.

It trains the same small GPT "proxy" model as the Rust crate (burn, CPU) on
random tokens and reports how fast one full training step runs, so the two
implementations can be compared shape by shape.

Model (pre-LN, decoder-only, fp32), for width N, depth L, context T, vocab V:

    h = tok_emb[x]                        (+ pos_emb[0:T] with --positions learned)
    repeat L times:
        h = h + r * attn(ln1(h))
        h = h + r * mlp(ln2(h))
    logits = logits_mult * unembed(ln_f(h))   (unembedding has no bias)
    loss   = cross_entropy(logits, next tokens)

* LayerNorm: eps 1e-5, with weight and bias.
* attn: fused qkv Linear(N, 3N), H = N / 64 heads of d_head = 64,
  scores = q k^T * attention_scale + alibi bias, causal mask, softmax, @ v,
  then proj Linear(N, N). attention_scale is 1/d_head (muP) or 1/sqrt(d_head).
  ALiBi slopes: slope_h = 2^(-8 (h+1) / H), bias = -slope_h * (i - j) for j <= i.
* mlp: fc Linear(N, 4N), relu(x)^2 ("relu2") or exact erf GELU, fc_out Linear(4N, N).
* All weight matrices and embeddings ~ Normal(0, sigma); biases 0; LN weight 1.

Training FLOPs per step (D = batch * T tokens), the usual 6*params*tokens
estimate plus the unembedding and the attention score/value matmuls:

    C = D * (6 * P_non_emb + 6 * N * V + 12 * L * N * T)
    P_non_emb = L * (12 N^2 + 13 N) + 2 N        (blocks + final LayerNorm)

Per block, 12 N^2 + 13 N = qkv (3N^2 + 3N) + proj (N^2 + N)
+ fc (4N^2 + 4N) + fc_out (4N^2 + N) + two LayerNorms (4N).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

D_HEAD = 64


def alibi_slopes(n_heads):
    """Standard ALiBi slopes: 2^(-8 (h+1) / H) for heads h = 0..H-1."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / n_heads) for h in range(n_heads)])


class Block(nn.Module):
    """One pre-LN transformer block: h += r*attn(ln1(h)); h += r*mlp(ln2(h))."""

    def __init__(self, cfg):
        super().__init__()
        n = cfg.width
        self.n_heads = n // D_HEAD
        self.residual_mult = cfg.residual_mult
        self.attention_scale = cfg.attention_scale
        self.sdpa = cfg.sdpa
        self.activation = cfg.activation
        self.ln1 = nn.LayerNorm(n, eps=1e-5)
        self.qkv = nn.Linear(n, 3 * n, bias=True)
        self.proj = nn.Linear(n, n, bias=True)
        self.ln2 = nn.LayerNorm(n, eps=1e-5)
        self.fc = nn.Linear(n, 4 * n, bias=True)
        self.fc_out = nn.Linear(4 * n, n, bias=True)

    def attn(self, x, alibi, causal):
        b, t, n = x.shape
        # [B, T, 3N] -> 3 x [B, H, T, d_head]
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, D_HEAD).permute(2, 0, 3, 1, 4)
        if self.sdpa:
            if alibi is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.attention_scale)
            else:
                # The causal -inf mask is already folded into `alibi` for this path.
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=alibi, scale=self.attention_scale)
        else:
            scores = (q @ k.transpose(-2, -1)) * self.attention_scale
            if alibi is not None:
                scores = scores + alibi
            scores = scores.masked_fill(causal, float("-inf"))
            y = scores.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, n))

    def mlp(self, x):
        x = self.fc(x)
        x = torch.relu(x).square() if self.activation == "relu2" else F.gelu(x)
        return self.fc_out(x)

    def forward(self, h, alibi, causal):
        h = h + self.residual_mult * self.attn(self.ln1(h), alibi, causal)
        return h + self.residual_mult * self.mlp(self.ln2(h))


class ProxyGPT(nn.Module):
    """The proxy GPT described in the module docstring; forward returns the mean loss."""

    def __init__(self, cfg):
        super().__init__()
        n, t = cfg.width, cfg.context
        self.logits_mult = cfg.logits_mult
        self.tok_emb = nn.Embedding(cfg.vocab, n)
        self.pos_emb = nn.Embedding(t, n) if cfg.positions == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(n, eps=1e-5)
        self.unembed = nn.Linear(n, cfg.vocab, bias=False)

        # Masks are constants of the shape, so build them once rather than per step.
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        self.register_buffer("causal", causal, persistent=False)
        if cfg.positions == "alibi":
            pos = torch.arange(t)
            distance = (pos[:, None] - pos[None, :]).float()  # i - j
            alibi = -alibi_slopes(n // D_HEAD)[:, None, None] * distance  # [H, T, T]
            if cfg.sdpa:
                # SDPA takes a single additive mask: ALiBi bias plus causal -inf.
                alibi = alibi.masked_fill(causal, float("-inf"))
            self.register_buffer("alibi", alibi, persistent=False)
        else:
            self.alibi = None

        # LayerNorms keep their default init (weight 1, bias 0).
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=cfg.sigma)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens):
        x, y = tokens[:, :-1], tokens[:, 1:]
        h = self.tok_emb(x)
        if self.pos_emb is not None:
            h = h + self.pos_emb.weight[: x.shape[1]]
        for block in self.blocks:
            h = block(h, self.alibi, self.causal)
        logits = self.logits_mult * self.unembed(self.ln_f(h))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def params_non_embedding(width, depth):
    """P_non_emb = L * (12 N^2 + 13 N) + 2 N (blocks plus final LayerNorm)."""
    return depth * (12 * width * width + 13 * width) + 2 * width


def training_flops(cfg):
    """C = D * (6 P_non_emb + 6 N V + 12 L N T), with D = batch * context."""
    n, l, t = cfg.width, cfg.depth, cfg.context
    per_token = 6 * params_non_embedding(n, l) + 6 * n * cfg.vocab + 12 * l * n * t
    return cfg.batch * t * per_token


def log(msg):
    # Diagnostics go to stderr so that --json output stays one object per line.
    print(msg, file=sys.stderr, flush=True)


def check_model(model, cfg):
    """Assert the parameter count matches the formula and the init loss is ~ln(V)."""
    counted = sum(p.numel() for p in model.blocks.parameters()) + sum(p.numel() for p in model.ln_f.parameters())
    expected = params_non_embedding(cfg.width, cfg.depth)
    log(f"[{cfg.width}x{cfg.depth}] P_non_emb counted {counted}, formula {expected}")
    assert counted == expected, f"parameter count {counted} != formula {expected}"

    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(cfg.vocab, (cfg.batch, cfg.context + 1), generator=gen)
    with torch.no_grad():
        loss = model(tokens).item()
    ln_v = math.log(cfg.vocab)
    # With unit-variance LN outputs the logits have std ~ logits_mult*sigma*sqrt(N),
    # which adds ~std^2/2 to the loss; only when that is small must the loss be ~ln(V).
    logit_std = cfg.logits_mult * cfg.sigma * math.sqrt(cfg.width)
    log(f"[{cfg.width}x{cfg.depth}] init loss {loss:.4f}, ln(V) {ln_v:.4f}, expected logit std {logit_std:.3f}")
    if logit_std < 0.5:
        assert abs(loss - ln_v) < 0.1 * ln_v, f"init loss {loss} is not close to ln(V) = {ln_v}"


def maybe_compile(model, sample):
    """torch.compile the model, or return it unchanged (with the reason) if that fails."""
    try:
        compiled = torch.compile(model)
        # Compilation is lazy: run one forward/backward so failures surface here.
        compiled(sample).backward()
        model.zero_grad(set_to_none=True)
        return compiled
    except Exception as exc:  # any backend/toolchain failure: fall back to eager
        log(f"torch.compile failed, continuing without it: {type(exc).__name__}: {exc}")
        model.zero_grad(set_to_none=True)
        return model


def bench_shape(cfg):
    """Train warmup + steps steps for one shape; return the result record."""
    torch.manual_seed(0)
    model = ProxyGPT(cfg)
    check_model(model, cfg)

    # All batches are drawn up front so the timed region is the training step only.
    gen = torch.Generator().manual_seed(1234)
    data = torch.randint(cfg.vocab, (cfg.warmup + cfg.steps, cfg.batch, cfg.context + 1), generator=gen)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    step_model = maybe_compile(model, data[0]) if cfg.compile else model

    def train_step(tokens):
        loss = step_model(tokens)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    for i in range(cfg.warmup):
        train_step(data[i])

    times = []
    for i in range(cfg.warmup, cfg.warmup + cfg.steps):
        start = time.perf_counter()
        train_step(data[i])
        times.append(time.perf_counter() - start)

    median = statistics.median(times)
    return {
        "impl": "pytorch",
        "shape": f"{cfg.width}x{cfg.depth}",
        "width": cfg.width,
        "depth": cfg.depth,
        "batch": cfg.batch,
        "context": cfg.context,
        "vocab": cfg.vocab,
        "steps": cfg.steps,
        "median_step_secs": median,
        "tokens_per_sec": cfg.batch * cfg.context / median,
        "gflops_per_sec": training_flops(cfg) / median / 1e9,
        "params_non_embedding": params_non_embedding(cfg.width, cfg.depth),
        "threads": cfg.threads,
        "torch": torch.__version__.split("+")[0],
    }


def parse_shapes(text):
    shapes = []
    for item in text.split(","):
        width, depth = (int(v) for v in item.lower().split("x"))
        if width % D_HEAD != 0:
            raise SystemExit(f"width {width} must be a multiple of d_head = {D_HEAD}")
        shapes.append((width, depth))
    return shapes


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="128x4,256x4,128x16", help="comma-separated WIDTHxDEPTH")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed steps per shape")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per shape")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--activation", choices=["relu2", "gelu"], default="relu2")
    p.add_argument("--positions", choices=["alibi", "learned"], default="alibi")
    p.add_argument("--attention-scale", choices=["mup", "standard"], default="mup",
                   help="mup: 1/d_head; standard: 1/sqrt(d_head)")
    p.add_argument("--sigma", type=float, default=0.02, help="init std of weights and embeddings")
    p.add_argument("--residual-mult", type=float, default=1.0)
    p.add_argument("--logits-mult", type=float, default=1.0)
    p.add_argument("--sdpa", action="store_true", help="use F.scaled_dot_product_attention")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--json", action="store_true", help="one JSON object per shape per line")
    args = p.parse_args()
    args.shapes = parse_shapes(args.shapes)
    args.attention_scale = 1.0 / D_HEAD if args.attention_scale == "mup" else 1.0 / math.sqrt(D_HEAD)
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    attention = "sdpa" if args.sdpa else "explicit"
    log(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.activation}, "
        f"{args.positions}, {attention} attention, batch {args.batch}, context {args.context}, "
        f"vocab {args.vocab}, steps {args.steps} (+{args.warmup} warmup)")

    if not args.json:
        print(f"{'shape':>8} {'P_non_emb':>10} {'median ms':>10} {'tokens/s':>10} {'GFLOP/s':>8}", flush=True)
    for width, depth in args.shapes:
        cfg = argparse.Namespace(**vars(args), width=width, depth=depth)
        r = bench_shape(cfg)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['shape']:>8} {r['params_non_embedding']:>10} {r['median_step_secs'] * 1e3:>10.1f} "
                  f"{r['tokens_per_sec']:>10.0f} {r['gflops_per_sec']:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
