"""Mixture-of-experts layers: which experts and routers a method's trainable parameters cover.

A run's manifest says what was trained; on a mixture of experts "the top two layers" hides
the question users ask, which experts and which routers. transformers 5 stores a layer's
experts fused in 3-D tensors (gate_up_proj and down_proj, one slice per expert), so a
trainable fused tensor trains every expert of its layer; older per-expert module lists
(experts.0, experts.1, ...) are read expert by expert.
"""

from __future__ import annotations

from lensml.runtime.families import decoder_of


def _experts_modules(layer):
    """(path inside the layer, experts module, its parent) for every experts block of a decoder layer."""
    found = []
    modules = dict(layer.named_modules())
    for path, module in modules.items():
        count = getattr(module, "num_experts", None)
        fused = any(p.dim() == 3 for p in module.parameters(recurse=False))
        listed = path.endswith("experts") and hasattr(module, "__len__") and not fused
        if (isinstance(count, int) and fused) or listed:
            parent = modules[path.rpartition(".")[0]] if "." in path else layer
            found.append((path, module, parent))
    return found


def trained_experts(model, names: list[str]) -> dict | None:
    """Per mixture-of-experts layer: the experts and router parameters among `names`; None for a dense model.

    {"num_experts": N, "layers": {"2": {"experts": [0..N-1], "expert_parameters": [...], "router": [...]}},
     "untrained_layers": [0, 1], "fused": true}
    """
    wanted = set(names)
    name_of = {id(p): n for n, p in model.named_parameters()}
    layers, untrained, count, fused_any = {}, [], None, False
    for index, layer in enumerate(decoder_of(model).layers):
        blocks = _experts_modules(layer)
        if not blocks:
            continue
        experts, expert_params, router = set(), [], []
        for _path, module, parent in blocks:
            own = [(n, p) for n, p in module.named_parameters()]
            fused = any(p.dim() == 3 for _, p in own)
            fused_any |= fused
            n_experts = getattr(module, "num_experts", None) or (len(module) if hasattr(module, "__len__") else None)
            count = count or n_experts
            for local, p in own:
                full = name_of.get(id(p))
                if full in wanted:
                    expert_params.append(full)
                    experts |= set(range(n_experts)) if fused else {int(local.split(".")[0])}
            for sib_name, sibling in parent.named_children():
                if sibling is module or not (sib_name in ("gate", "router") or "Router" in type(sibling).__name__):
                    continue
                router += [name_of[id(p)] for p in sibling.parameters() if name_of.get(id(p)) in wanted]
        if expert_params or router:
            layers[str(index)] = {"experts": sorted(experts), "expert_parameters": sorted(expert_params),
                                  "router": sorted(router)}
        else:
            untrained.append(index)
    if not layers and not untrained:
        return None
    return {"num_experts": count, "layers": layers, "untrained_layers": untrained, "fused": fused_any}
