"""Stage 5's networks and how token rows go through them: loading the policy, the critic, the
reference and the reward model; sampling rollouts; the forward pass that reads them back.

**Value function: a separate critic initialised from the reward model.** This
is what lm-human-preferences and TRL's PPOv2 did. The critic starts out
already predicting the score at the end of a response, so values are useful
from the first step; and the value loss cannot pull the policy's features
around (a value head on the policy trunk couples the two losses through the
shared weights, and the value loss's scale then matters for the policy).
The cost is memory and a second forward/backward; with LoRA it is small: the
critic is the reward model *plus its own adapter* (and a trainable copy of the
score head), and the reward itself is the same network with the adapter
disabled — one copy of the reward model's weights serves both. Likewise the
reference policy is the SFT model with the policy's adapter disabled
(``with policy.disable_adapter():``), so no second copy. With
``reward="verifier"`` (no reward model) the critic is the SFT trunk with a
zero-initialised scalar head.

One invariant holds these pieces together: the training passes see exactly
what ``sample`` generated from. ``sample`` left-pads the prompts; ``rollout_inputs``
joins prompt and response rows and cuts the padding columns they all share;
``position_ids`` counts positions over real tokens only, as ``generate()``
does; ``PolicyAndValue`` and the reference read logits at positions t-1 for
token t. Dropout is off in every network (``no_dropout``). ``seed_for`` gives
every draw its own seed, so a resumed run samples exactly what it would have.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from . import ppo_math as pm
from . import world as W
from .config import ConfigError
from .models import objective_of
from .planner import lora_targets
from .ppo_config import PPOConfig
from .tokenizer import ensure_chat_ready, format_prompt, to_prompt_completion
from .training import lora_config, quiet_peft

# --- loading ---------------------------------------------------------------------------------

class _Verbosity(contextlib.ContextDecorator):
    """Silence transformers' 'newly initialized weights' notice for the critic head we initialise ourselves."""

    def __enter__(self):
        import transformers
        self.level = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()

    def __exit__(self, *exc):
        import transformers
        transformers.logging.set_verbosity(self.level)


def no_dropout(model):
    """PPO with dropout makes the old and new log-probabilities differ by noise alone [NDetails]."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    for k in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if isinstance(getattr(model.config, k, None), float):
            setattr(model.config, k, 0.0)
    return model


def load_policy(path):
    """A causal LM from a checkpoint folder, dropout off (as PPO's policy: log-probs must not be noisy)."""
    from transformers import AutoModelForCausalLM
    return no_dropout(AutoModelForCausalLM.from_pretrained(str(path)))


def load_models(cfg: PPOConfig, policy_path, reward_path):
    """(policy, reference or None, critic, reward model or None, tokenizer, reward tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    if Path(policy_path).exists() and objective_of(policy_path) != "causal":
        raise ConfigError(f"PPO needs a causal (decoder) policy, but {policy_path} is a {objective_of(policy_path)} model")
    tokenizer = ensure_chat_ready(AutoTokenizer.from_pretrained(str(policy_path)))
    policy = no_dropout(AutoModelForCausalLM.from_pretrained(str(policy_path)))
    rm_tok = None
    if reward_path is not None:
        rm_tok = ensure_chat_ready(AutoTokenizer.from_pretrained(str(reward_path)))
        critic = no_dropout(AutoModelForSequenceClassification.from_pretrained(str(reward_path)))
        if critic.config.num_labels != 1:
            raise ConfigError(f"the reward model at {reward_path} has num_labels={critic.config.num_labels}; "
                              "a reward model outputs one score (num_labels=1)")
        # The critic is initialised from the reward model and reads the policy's token ids.
        if rm_tok.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(f"the reward model ({reward_path}) and the policy ({policy_path}) use different "
                              "tokenizers; the critic is initialised from the reward model and reads the "
                              "policy's tokens, so train the reward model from this SFT model")
    else:  # reward="verifier": the critic is the SFT trunk with a fresh, zero-initialised scalar head
        with _Verbosity():
            critic = no_dropout(AutoModelForSequenceClassification.from_pretrained(str(policy_path), num_labels=1))
        torch.nn.init.zeros_(critic.score.weight)
    if critic.config.pad_token_id is None:
        critic.config.pad_token_id = (rm_tok or tokenizer).pad_token_id
    if cfg.use_lora:
        from peft import get_peft_model
        targets = lora_targets(policy, cfg.lora_target_modules)  # the critic's adapters sit on the same layers
        with quiet_peft():
            policy = get_peft_model(policy, lora_config(policy, cfg.lora_r, cfg.lora_alpha, target_modules=targets))
            # The score head is trained as a copy (modules_to_save); disable_adapter() restores the reward model.
            critic = get_peft_model(critic, lora_config(critic, cfg.lora_r, cfg.lora_alpha, target_modules=targets,
                                                        classifier=True))
        ref, rm = None, None
    else:
        ref = no_dropout(AutoModelForCausalLM.from_pretrained(str(policy_path))).requires_grad_(False).eval()
        rm = None
        if reward_path is not None:
            rm = no_dropout(AutoModelForSequenceClassification.from_pretrained(str(reward_path)))
            rm.requires_grad_(False).eval()
            if rm.config.pad_token_id is None:
                rm.config.pad_token_id = rm_tok.pad_token_id
    if cfg.gradient_checkpointing:
        for m in (policy, critic):
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return policy, ref, critic, rm, tokenizer, rm_tok


# --- rollouts --------------------------------------------------------------------------------

@torch.no_grad()
def sample(policy, tokenizer, instructions: list[str], max_new_tokens: int, temperature: float | None,
           autocast=contextlib.nullcontext()) -> dict:
    """Generate one response per instruction (temperature None = greedy); responses cut after the first EOS."""
    from transformers import GenerationConfig
    device = next(policy.parameters()).device
    enc = tokenizer([format_prompt(tokenizer, x) for x in instructions], return_tensors="pt", padding=True,
                    padding_side="left", add_special_tokens=False).to(device)
    how = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature else dict(do_sample=False)
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id, use_cache=True, **how)
    was_training = policy.training
    policy.eval()
    with autocast:
        out = policy.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, generation_config=gen_cfg)
    policy.train(was_training)
    response = out[:, enc.input_ids.shape[1]:]
    mask, has_eos = pm.first_eos_mask(response, tokenizer.eos_token_id)
    response = torch.where(mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    texts = [tokenizer.decode([t for t, m in zip(row, mrow) if m and t != tokenizer.eos_token_id],
                              skip_special_tokens=True).strip()
             for row, mrow in zip(response.tolist(), mask.tolist())]
    return {"query": enc.input_ids, "query_mask": enc.attention_mask, "response": response, "mask": mask,
            "has_eos": has_eos, "texts": texts}


# --- reading rollouts back: policy, critic, reference -------------------------------------------

def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as generate() does for left-padded prompts."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def rollout_inputs(batch: dict, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt + response rows ``idx``, without the left-padding columns that every one of them has."""
    ids = torch.cat([batch["query"][idx], batch["response"][idx]], dim=1)
    attn = torch.cat([batch["query_mask"][idx], batch["mask"][idx].to(batch["query_mask"].dtype)], dim=1)
    first = int(attn.argmax(dim=1).min())  # position ids come from the mask, so cutting pad columns changes nothing
    return ids[:, first:], attn[:, first:]


class PolicyAndValue(torch.nn.Module):
    """The two trained networks as one module, so one DDP wrapper syncs both (TRL PPOv2's PolicyAndValueWrapper).

    ``forward`` returns, for the last ``n_response`` tokens of each row, the
    policy's logits that *predict* them (positions t-1) and the critic's values
    at the same positions: V(state before the token).
    """

    def __init__(self, policy, critic):
        super().__init__()
        self.policy, self.critic = policy, critic

    def forward(self, input_ids, attention_mask, n_response: int):
        pos = position_ids(attention_mask)
        logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                             logits_to_keep=n_response + 1, use_cache=False).logits[:, :-1]
        return logits, critic_values(self.critic, input_ids, attention_mask, pos, n_response)


def critic_values(critic, input_ids, attention_mask, pos, n_response: int) -> torch.Tensor:
    """The sequence classifier's score head applied at every position, not just the last one."""
    base = _base(critic)
    hidden = getattr(base, base.base_model_prefix)(input_ids=input_ids, attention_mask=attention_mask,
                                                   position_ids=pos, use_cache=False).last_hidden_state
    return base.score(hidden[:, -n_response - 1:-1]).squeeze(-1)


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def reference(pv: PolicyAndValue, ref):
    """The model to compute reference log-probs with: the frozen copy, or the policy with its adapter off."""
    return contextlib.nullcontext(ref) if ref is not None else adapter_disabled(pv.policy)


@contextlib.contextmanager
def adapter_disabled(peft_model):
    with peft_model.disable_adapter():
        yield peft_model


def demonstration_tasks(world, families: str, seed: int, n: int = 2000) -> list[dict]:
    """PPO-ptx's demonstrations: the world's task families among ``families`` (no conduct family: PPO is
    there to change conduct) from SFT's training split, with their answers. Never an evaluation prompt."""
    fams = [f for f in W.parse_families(families) if f not in W.CONDUCT_FAMILIES]
    if not fams:
        raise ConfigError(f"ptx_coef needs a task family among families={families!r} (conduct is not demonstrated)")
    return W.make_tasks(world, n, "train", seed, fams)


def demonstrations(tokenizer, tasks: list[dict]) -> dict:
    """PPO-ptx's batches: each task's prompt and answer as SFT trains on them (``tokenizer.to_prompt_completion``:
    the chat format, EOS included), right-padded, with labels only on the answer's tokens."""
    rows = []
    for r in to_prompt_completion(tokenizer, tasks):
        prompt = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        answer = tokenizer(r["completion"], add_special_tokens=False)["input_ids"]
        rows.append((prompt + answer, [-100] * len(prompt) + answer))
    width, pad = max(len(ids) for ids, _ in rows), tokenizer.pad_token_id or 0
    return {"input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
            "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])}


def ptx_loss(policy, ptx: dict, rows: torch.Tensor, autocast) -> torch.Tensor:
    """Mean cross-entropy of ``policy`` on the demonstrations ``rows`` of ``ptx`` (response tokens only)."""
    dev = next(policy.parameters()).device
    # Rows are right-padded to the longest demonstration of all; cut to the longest of these: the pad
    # columns change no real token's logits (causal attention) and cost a forward/backward each.
    width = int(ptx["attention_mask"][rows].sum(1).max())
    batch = {k: ptx[k][rows, :width].to(dev) for k in ("input_ids", "attention_mask", "labels")}
    with autocast:
        return policy(**batch, use_cache=False).loss.float()  # no KV cache to fill
