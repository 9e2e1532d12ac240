"""Tests for iclnb.graphs: graph families, walk samplers and walk helpers (docs/methods.md)."""

import json
from collections import Counter

import numpy as np
import pytest

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.graphs import (
    GRID_WORDS,
    NOUNS,
    Graph,
    block_permute,
    co_membership_agreement,
    cluster_runs,
    days_of_week_ring,
    dual,
    dual_walk,
    full_shuffle,
    grid,
    hex_lattice,
    hierarchy,
    hypothesis_adjacency,
    is_anchor,
    is_bridge,
    non_edge_steps,
    random_walk,
    ring,
    sbm,
    semantic_conflict,
    walk_words,
)
from iclnb.core.seeding import stream


def rng(i=0, purpose="test"):
    return stream(1234, purpose, i)


def connected(adjacency):
    n = len(adjacency)
    seen = {0}
    frontier = [0]
    while frontier:
        i = frontier.pop()
        for j in np.flatnonzero(adjacency[i]):
            if j not in seen:
                seen.add(int(j))
                frontier.append(int(j))
    return len(seen) == n


def all_families(seed=0):
    return [
        grid(),
        grid(3, 5),
        ring(),
        hex_lattice(),
        sbm(rng=rng(seed)),
        hierarchy(rng=rng(seed)),
        hierarchy(rng=rng(seed), legacy_distance=True),
        semantic_conflict(rng=rng(seed)),
        semantic_conflict("unrelated", rng=rng(seed)),
        dual(rng=rng(seed)),
        days_of_week_ring(rng(seed)),
    ]


# ----------------------------------------------------------------------------------------------------------------
# Every family


@pytest.mark.parametrize("seed", range(5))
def test_every_family_is_a_simple_connected_graph(seed):
    for g in all_families(seed):
        adjacencies = [g.adjacency] + ([g.extra["G2_adjacency"]] if "G2_adjacency" in g.extra else [])
        for a in adjacencies:
            assert a.shape == (g.n, g.n)
            assert set(np.unique(a)) <= {0, 1}
            assert np.array_equal(a, a.T), g.name
            assert not np.any(np.diag(a)), g.name
            assert connected(a), g.name
        assert len(g.words) == g.n and len(set(g.words)) == g.n
        for labels in g.labelings.values():
            assert labels.shape == (g.n,)
        if g.hierarchy_distance is not None:
            d = g.hierarchy_distance
            assert np.array_equal(d, d.T) and np.all(np.diag(d) == 0) and np.all(d[~np.eye(g.n, dtype=bool)] >= 1)


def test_graph_conveniences_and_json():
    g = grid()
    edges = g.edges()
    assert edges.shape == (24, 2) and np.all(edges[:, 0] < edges[:, 1])
    assert g.word_to_node["apple"] == 0 and g.word_to_node["phone"] == 15
    assert g.neighbors(0).tolist() == [1, 4]
    assert g.neighbors(5).tolist() == [1, 4, 6, 9]
    dist = g.shortest_path_distances()
    assert dist[0, 15] == 6 and dist[0, 5] == 2
    d = json.loads(json.dumps(sbm(rng=rng()).to_dict()))
    assert set(d) == {"name", "words", "edges", "labelings"}
    assert d["name"] == "sbm" and len(d["labelings"]["cluster"]) == 15
    with pytest.raises(IclnbError):
        g.neighbors(16)


def test_shortest_path_inf_when_disconnected():
    a = np.zeros((3, 3), dtype=np.uint8)
    a[0, 1] = a[1, 0] = 1
    g = Graph("toy", a, ("x", "y", "z"))
    assert np.isinf(g.shortest_path_distances()[0, 2]) and g.shortest_path_distances()[0, 1] == 1


def test_graph_arrays_are_read_only():
    g = sbm(rng=rng())
    with pytest.raises(ValueError):
        g.adjacency[0, 1] = 1
    with pytest.raises(ValueError):
        g.labelings["cluster"][0] = 2


def test_graph_validation():
    with pytest.raises(IclnbError):
        Graph("bad", np.array([[0, 1], [0, 0]]), ("a", "b"))  # not symmetric
    with pytest.raises(IclnbError):
        Graph("bad", np.array([[1, 0], [0, 0]]), ("a", "b"))  # self loop
    with pytest.raises(IclnbError):
        Graph("bad", np.array([[0, 1], [1, 0]]), ("a", "a"))  # repeated word


# ----------------------------------------------------------------------------------------------------------------
# Lattices


def test_grid_4x4_edges_and_default_words():
    g = grid()
    assert g.n == 16 and len(g.edges()) == 24
    assert g.words == tuple("apple bird car egg house milk plane opera box sand sun mango rock math code phone".split())
    assert g.words == GRID_WORDS
    # node r*cols + c: node 6 (row 1, col 2) touches 2, 5, 7, 10
    assert g.neighbors(6).tolist() == [2, 5, 7, 10]


def test_grid_other_sizes_and_custom_words():
    g = grid(2, 3)
    assert g.n == 6 and len(g.edges()) == 7 and g.words == NOUNS[:6]
    g = grid(1, 2, words=["up", "down"])
    assert g.words == ("up", "down") and len(g.edges()) == 1
    for bad in [dict(rows=-1), dict(rows=0), dict(cols=2.5), dict(rows=1, cols=1)]:
        with pytest.raises(IclnbError):
            grid(**bad)
    with pytest.raises(IclnbError):
        grid(2, 2, words=["a", "b", "c"])  # too few words
    with pytest.raises(IclnbError):
        grid(1, 2, words=["a", "a"])
    with pytest.raises(IclnbError):
        grid(20, 20)  # more nodes than the default vocabulary


def test_nouns_vocabulary():
    assert len(NOUNS) >= 120
    assert len(set(NOUNS)) == len(NOUNS)
    assert all(w.isalpha() and w == w.lower() for w in NOUNS)


def test_ring_degrees():
    g = ring(9)
    assert np.all(g.adjacency.sum(axis=1) == 2) and len(g.edges()) == 9
    assert g.adjacency[0, 8] == 1
    with pytest.raises(IclnbError):
        ring(2)


def test_hex_lattice_degrees():
    g = hex_lattice(2, 3)
    degrees = g.adjacency.sum(axis=1)
    assert set(degrees.tolist()) <= {2, 3}
    assert np.array_equal(g.extra["positions"], sorted(map(tuple, g.extra["positions"])))
    with pytest.raises(IclnbError):
        hex_lattice(0, 3)


def test_days_of_week_ring():
    g = days_of_week_ring(rng(3))
    assert sorted(g.words) == sorted(graphs.WEEKDAYS)
    order = g.extra["calendar_order"]
    assert [graphs.WEEKDAYS[k] for k in order] == list(g.words)
    assert np.all(g.adjacency.sum(axis=1) == 2)
    assert days_of_week_ring(rng(3)).words == g.words


# ----------------------------------------------------------------------------------------------------------------
# sbm


def test_sbm_clusters_and_distance():
    g = sbm(4, 6, rng=rng())
    assert g.n == 24
    assert Counter(g.labelings["cluster"].tolist()) == {c: 6 for c in range(4)}
    assert g.labelings["cluster"][7] == 1
    d = g.hierarchy_distance
    assert d[0, 0] == 0 and d[0, 5] == 1 and d[0, 6] == 2
    assert set(g.words) <= set(NOUNS)


def test_sbm_empirical_densities():
    intra_edges = inter_edges = intra_pairs = inter_pairs = 0
    for seed in range(200):
        g = sbm(rng=rng(seed, "density"))
        labels = g.labelings["cluster"]
        i, j = np.triu_indices(g.n, k=1)
        same = labels[i] == labels[j]
        present = g.adjacency[i, j] == 1
        intra_edges += present[same].sum()
        inter_edges += present[~same].sum()
        intra_pairs += same.sum()
        inter_pairs += (~same).sum()
    assert abs(intra_edges / intra_pairs - 0.8) < 0.03
    assert abs(inter_edges / inter_pairs - 0.1) < 0.02


def test_sbm_repairs_connectivity():
    g = sbm(3, 4, p_intra=1.0, p_inter=0.0, rng=rng())
    assert connected(g.adjacency)
    assert len(g.extra["repair_edges"]) == 2  # two extra components, one link each
    assert len(g.edges()) == 3 * 6 + 2


def test_sbm_same_seed_same_graph_and_words_do_not_shift_edges():
    a = sbm(rng=rng(7))
    b = sbm(rng=rng(7))
    c = sbm(rng=rng(7), words=NOUNS[-15:])
    assert np.array_equal(a.adjacency, b.adjacency) and a.words == b.words
    assert np.array_equal(a.adjacency, c.adjacency) and c.words == NOUNS[-15:]


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_clusters=-1), dict(cluster_size=0), dict(p_intra=1.5), dict(p_inter=-0.1), dict(n_clusters=1, cluster_size=1)],
)
def test_sbm_rejects_nonsense(kwargs):
    with pytest.raises(IclnbError):
        sbm(**kwargs, rng=rng())


def test_sbm_rejects_missing_generator():
    with pytest.raises(IclnbError):
        sbm(rng=42)


# ----------------------------------------------------------------------------------------------------------------
# hierarchy


def test_hierarchy_distance_by_hand():
    g = hierarchy((2, 2, 4), rng=rng())
    d = g.hierarchy_distance
    assert g.n == 16
    # node digits (a, b, c) with node = 8a + 4b + c
    assert d[0, 1] == 1  # (0,0,0) vs (0,0,1): same finest group
    assert d[0, 3] == 1
    assert d[0, 4] == 2  # (0,0,0) vs (0,1,0): same level-1 cluster only
    assert d[0, 8] == 3  # (0,0,0) vs (1,0,0): different top-level clusters
    assert d[5, 6] == 1 and d[5, 1] == 2 and d[5, 13] == 3 and d[15, 12] == 1
    assert d.max() == 3 and np.all(np.diag(d) == 0)
    assert g.labelings["level_1"].tolist() == [0] * 8 + [1] * 8
    assert g.labelings["level_2"].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert set(g.labelings) == {"level_1", "level_2"}
    assert g.extra["branching"] == [2, 2, 4]


def test_hierarchy_edge_probabilities_by_distance():
    counts = np.zeros(4)
    pairs = np.zeros(4)
    for seed in range(100):
        g = hierarchy((2, 2, 4), p_same=0.9, decay=0.3, rng=rng(seed, "hier"))
        i, j = np.triu_indices(g.n, k=1)
        dist = g.hierarchy_distance[i, j]
        np.add.at(counts, dist, g.adjacency[i, j])
        np.add.at(pairs, dist, 1)
    rates = counts[1:] / pairs[1:]
    assert abs(rates[0] - 0.9) < 0.04
    assert abs(rates[1] - 0.27) < 0.04
    assert abs(rates[2] - 0.081) < 0.03


def test_hierarchy_legacy_distance_is_sparser():
    new = [len(hierarchy(rng=rng(s, "legacy")).edges()) for s in range(40)]
    old = [len(hierarchy(rng=rng(s, "legacy"), legacy_distance=True).edges()) for s in range(40)]
    assert np.mean(old) < 0.6 * np.mean(new)


def test_hierarchy_rejects_nonsense():
    for bad in [dict(branching=()), dict(branching=(2, -1)), dict(branching=(1,)), dict(decay=2.0), dict(branching=3)]:
        with pytest.raises(IclnbError):
            hierarchy(**bad, rng=rng())


# ----------------------------------------------------------------------------------------------------------------
# semantic_conflict


def test_semantic_conflict_layout_and_pairs():
    g = semantic_conflict(rng=rng())
    assert g.n == 12
    assert g.words[:4] == ("cat", "computer", "tomato", "chair")
    assert g.words[4:8] == ("dog", "television", "potato", "table")
    cluster, group = g.labelings["cluster"], g.labelings["semantic_group"]
    assert Counter(cluster.tolist()) == {0: 4, 1: 4, 2: 4}
    assert Counter(group.tolist()) == {0: 3, 1: 3, 2: 3, 3: 3}
    sem, gra = g.extra["semantic_pairs"], g.extra["graph_pairs"]
    assert len(sem) == 12 and len(gra) == 18
    assert np.all(sem[:, 0] < sem[:, 1]) and np.all(gra[:, 0] < gra[:, 1])
    assert np.all(group[sem[:, 0]] == group[sem[:, 1]]) and np.all(cluster[sem[:, 0]] != cluster[sem[:, 1]])
    assert np.all(cluster[gra[:, 0]] == cluster[gra[:, 1]])
    words = {frozenset((g.words[a], g.words[b])) for a, b in sem}
    assert frozenset(("cat", "dog")) in words and frozenset(("desk", "chair")) in words


def test_semantic_conflict_paired_design():
    for seed in range(5):
        s = semantic_conflict("semantic", rng=rng(seed))
        u = semantic_conflict("unrelated", rng=rng(seed))
        assert np.array_equal(s.adjacency, u.adjacency)
        for key in ("cluster", "semantic_group"):
            assert np.array_equal(s.labelings[key], u.labelings[key])
        assert u.words[:4] == ("piano", "cloud", "window", "garden")
    with pytest.raises(IclnbError):
        semantic_conflict("colours", rng=rng())


# ----------------------------------------------------------------------------------------------------------------
# dual


def test_dual_clusterings():
    for seed in range(20):
        g = dual(rng=rng(seed, "dual"))
        h1, h2 = g.labelings["H1"], g.labelings["H2"]
        assert h1.tolist() == [0] * 5 + [1] * 5 + [2] * 5
        assert sorted(Counter(h2.tolist()).values()) == [5, 5, 5]
        assert co_membership_agreement(h1, h2) <= 0.8
        assert g.extra["agreement"] == pytest.approx(co_membership_agreement(h1, h2))
        assert g.hierarchy_distance is None


def test_co_membership_agreement_by_hand():
    # 6 pairs; a puts 01 and 23 together, b puts 02 and 13 together; they agree only on 03 and 12 (both apart)
    assert co_membership_agreement([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(2 / 6)
    assert co_membership_agreement([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0


@pytest.mark.parametrize("kwargs", [dict(n_clusters=1), dict(n_words=4, n_clusters=4), dict(max_agreement=0.0)])
def test_dual_degenerate_settings_raise(kwargs):
    with pytest.raises(IclnbError, match="degenerate"):
        dual(**kwargs, rng=rng())


def test_dual_rejects_nonsense():
    with pytest.raises(IclnbError):
        dual(n_words=3, n_clusters=5, rng=rng())


# ----------------------------------------------------------------------------------------------------------------
# random walks


def test_random_walk_follows_edges_and_is_reproducible():
    for g in all_families(1):
        w = random_walk(g, 300, rng(1, "walk"))
        assert w.shape == (300,) and w.dtype.kind == "i"
        assert np.all(g.adjacency[w[:-1], w[1:]] == 1), g.name
        assert np.array_equal(w, random_walk(g, 300, rng(1, "walk")))
    g = sbm(rng=rng())
    assert not np.array_equal(random_walk(g, 50, rng(1, "walk")), random_walk(g, 50, rng(2, "walk")))


def test_random_walk_start_and_override():
    g = dual(rng=rng())
    w = random_walk(g, 200, rng(), start=3, adjacency=hypothesis_adjacency(g, "H2"))
    assert w[0] == 3
    assert np.all(g.extra["G2_adjacency"][w[:-1], w[1:]] == 1)
    assert len(random_walk(g, 0, rng())) == 0
    with pytest.raises(IclnbError):
        random_walk(g, 10, rng(), start=99)
    with pytest.raises(IclnbError):
        random_walk(g, -1, rng())
    with pytest.raises(IclnbError):
        random_walk(g, 10, rng(), bridge_penalty=0)


def test_random_walk_isolated_node_raises():
    a = np.zeros((3, 3), dtype=np.uint8)
    a[0, 1] = a[1, 0] = 1
    g = Graph("toy", a, ("x", "y", "z"))
    with pytest.raises(IclnbError, match="no neighbours"):
        random_walk(g, 5, rng(), start=0)


def test_a_long_walk_follows_edges_only():
    g = sbm(rng=rng())
    w = random_walk(g, 10_000, rng(), bridge_penalty=0.3)
    assert len(w) == 10_000
    assert np.all(g.adjacency[w[:-1], w[1:]] == 1)


def expected_bridge_fraction(g, penalty, length):
    """Exact expected bridge fraction of positions 1..length-1 for a uniform start, from the transition matrix."""
    labels = g.labelings["cluster"]
    different = labels[:, None] != labels[None, :]
    weights = g.adjacency * np.where(different, penalty, 1.0)
    transition = weights / weights.sum(axis=1, keepdims=True)
    bridge_prob = (transition * different).sum(axis=1)  # P(next step is a bridge | current node)
    p = np.full(g.n, 1.0 / g.n)
    total = 0.0
    for _ in range(length - 1):
        total += p @ bridge_prob
        p = p @ transition
    return total / (length - 1)


@pytest.mark.parametrize("penalty", [1.0, 0.3])
def test_random_walk_bridge_fraction_matches_transition_matrix(penalty):
    g = sbm(rng=rng(5, "bridge"))
    length, n_walks = 500, 80
    fractions = [
        is_bridge(g, random_walk(g, length, rng(k, "bridge-walk"), bridge_penalty=penalty))[1:].mean()
        for k in range(n_walks)
    ]
    expected = expected_bridge_fraction(g, penalty, length)
    stderr = np.std(fractions) / np.sqrt(n_walks)
    assert abs(np.mean(fractions) - expected) < max(4 * stderr, 0.005)


def test_bridge_penalty_ignored_without_clusters():
    g = grid()
    assert np.array_equal(random_walk(g, 100, rng(), bridge_penalty=1.0), random_walk(g, 100, rng(), bridge_penalty=0.2))


def test_hierarchy_walk_weights():
    # a deep penalty makes cross-top-level steps rarer than cross-level-2 steps within a top-level cluster
    g = hierarchy((2, 2, 4), p_same=1.0, decay=1.0, rng=rng())  # complete graph: weights alone decide
    w = random_walk(g, 20_000, rng(), bridge_penalty=0.5)
    d = g.hierarchy_distance[w[:-1], w[1:]]
    # from any node: 3 neighbours at distance 1 (weight 1), 4 at 2 (0.5), 8 at 3 (0.25): total 7
    assert np.mean(d == 1) == pytest.approx(3 / 7, abs=0.02)
    assert np.mean(d == 2) == pytest.approx(2 / 7, abs=0.02)
    assert np.mean(d == 3) == pytest.approx(2 / 7, abs=0.02)


# ----------------------------------------------------------------------------------------------------------------
# dual walks


@pytest.mark.parametrize("hypothesis", ["H1", "H2"])
@pytest.mark.parametrize("D", [1, 10, 40])
def test_dual_walk_validity(hypothesis, D):
    g = dual(rng=rng(2, "dualwalk"))
    a1 = g.adjacency.astype(bool)
    a2 = g.extra["G2_adjacency"].astype(bool)
    chosen, other = (a1, a2) if hypothesis == "H1" else (a2, a1)
    for trial in range(5):
        w = dual_walk(g, 60, rng(trial, "dw"), hypothesis, disambiguate_at=D)
        steps = list(zip(w[:-1], w[1:]))
        for t, (i, j) in enumerate(steps, start=1):
            if t < D:
                assert a1[i, j] and a2[i, j]
            elif t == D:
                assert chosen[i, j] and not other[i, j]
            else:
                assert chosen[i, j]
        assert np.array_equal(w, dual_walk(g, 60, rng(trial, "dw"), hypothesis, disambiguate_at=D))


def test_dual_walk_ambiguous_throughout():
    g = dual(rng=rng(2, "dualwalk"))
    w = dual_walk(g, 80, rng(), "H1")
    assert np.all(g.adjacency[w[:-1], w[1:]] & g.extra["G2_adjacency"][w[:-1], w[1:]])


def test_dual_walk_degenerate_raises_not_recursion():
    base = dual(rng=rng())
    same = Graph("dual", base.adjacency, base.words, base.labelings, None, {"G2_adjacency": base.adjacency})
    with pytest.raises(IclnbError, match="degenerate"):
        dual_walk(same, 20, rng(), "H2", disambiguate_at=5, max_tries=10)
    with pytest.raises(IclnbError):
        dual_walk(base, 20, rng(), "H3", disambiguate_at=5)
    with pytest.raises(IclnbError):
        dual_walk(base, 20, rng(), "H1", disambiguate_at=20)
    with pytest.raises(IclnbError):
        dual_walk(grid(), 20, rng(), "H1")


# ----------------------------------------------------------------------------------------------------------------
# walk helpers


def toy_clustered():
    return sbm(2, 3, p_intra=1.0, p_inter=1.0, rng=rng())  # clusters {0,1,2}, {3,4,5}


def test_is_bridge_and_anchor_by_hand():
    g = toy_clustered()
    walk = [0, 1, 3, 4, 5, 2, 2, 0]
    assert is_bridge(g, walk).tolist() == [False, False, True, False, False, True, False, False]
    assert is_anchor(g, walk).tolist() == [False, True, False, True, True, False, True, True]
    assert is_bridge(g, []).tolist() == []
    with pytest.raises(IclnbError, match="available"):
        is_bridge(g, walk, labeling="level_1")
    h = hierarchy((2, 2, 4), rng=rng())
    assert is_bridge(h, [0, 4, 8, 9], labeling="level_1").tolist() == [False, False, True, False]
    assert is_bridge(h, [0, 4, 8, 9], labeling="level_2").tolist() == [False, True, True, False]


def test_walk_words():
    g = grid()
    assert walk_words(g, [0, 1, 5]) == ["apple", "bird", "milk"]
    with pytest.raises(IclnbError):
        walk_words(g, [0, 16])


def test_block_permute_keeps_runs():
    g = sbm(rng=rng())
    walk = random_walk(g, 200, rng(), bridge_penalty=0.3)
    runs = cluster_runs(g, walk)
    assert np.array_equal(np.concatenate(runs), walk)
    permuted = block_permute(g, walk, rng(1, "perm"))
    assert len(permuted) == len(walk)
    assert Counter(permuted.tolist()) == Counter(walk.tolist())
    # the permuted walk is a concatenation of the same runs: greedily match from the run multiset
    remaining = Counter(tuple(r.tolist()) for r in runs)
    pos = 0
    while pos < len(permuted):
        match = [r for r in remaining if remaining[r] and tuple(permuted[pos:pos + len(r)].tolist()) == r]
        assert match, "permuted walk is not made of the original runs"
        r = max(match, key=len)
        remaining[r] -= 1
        pos += len(r)
    assert sum(remaining.values()) == 0
    assert np.array_equal(permuted, block_permute(g, walk, rng(1, "perm")))
    assert non_edge_steps(g, walk) == 0


def test_block_permute_hand_example():
    g = toy_clustered()
    walk = np.array([0, 1, 3, 4, 2])
    runs = [r.tolist() for r in cluster_runs(g, walk)]
    assert runs == [[0, 1], [3, 4], [2]]
    seen = {tuple(block_permute(g, walk, rng(k, "hand")).tolist()) for k in range(60)}
    expected = {tuple(sum((runs[i] for i in order), [])) for order in
                [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]}
    assert seen == expected


def test_full_shuffle():
    walk = np.arange(50) % 7
    shuffled = full_shuffle(walk, rng())
    assert Counter(shuffled.tolist()) == Counter(walk.tolist())
    assert not np.array_equal(shuffled, walk)
    assert np.array_equal(shuffled, full_shuffle(walk, rng()))


def test_non_edge_steps():
    g = grid()
    assert non_edge_steps(g, [0, 1, 2, 6]) == 0
    assert non_edge_steps(g, [0, 2, 6, 15]) == 2
