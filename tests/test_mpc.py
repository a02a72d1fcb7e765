"""The shared-arithmetic engine: dealer tuples, Beaver products, exact truncation, bounds.

Every result is compared with plaintext numpy; products are exact in the
ring, fixed-point results within their stated error.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.crypto.fixedpoint import decode, encode
from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE, reconstruct, share
from invisible.errors import ProtocolError
from invisible.jobspec import JobSpec
from invisible.net.inprocess import InProcessHub
from invisible.protocols.mpc import arithmetic
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.dealer import request_step, run_dealer
from invisible.protocols.mpc.provider import DealerProvider
from invisible.protocols.mpc.shared import SharedArray
from invisible.protocols.mpc.tuples import CATALOGUE, CMP_BITS, component_shapes

_jobs = itertools.count()
F = 16
ULP = 2.0**-F


class Engine:
    """Runs one program at every computing party, with the dealer serving, over a transport."""

    def __init__(self, channels_for, parties):
        self.channels_for = channels_for
        self.parties = tuple(parties)

    def run(self, program):
        channels = self.channels_for(f"mpc-{next(_jobs)}")
        results, errors = {}, {}

        def party(name):
            try:
                ctx = MpcContext(channels[name], self.parties, "dealer", F)
                provider = DealerProvider(channels[name], self.parties, "dealer")
                try:
                    results[name] = (program(ctx, provider), ctx.record)
                finally:
                    provider.close()
            except Exception as exc:  # re-raised below
                errors[name] = exc
                channels[name].abort()

        def dealer():
            try:
                results["dealer"] = run_dealer(channels["dealer"], self.parties, Prg.from_os())
            except Exception as exc:
                errors["dealer"] = exc

        threads = [threading.Thread(target=party, args=(p,)) for p in self.parties]
        threads.append(threading.Thread(target=dealer))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        if errors:
            raise next(iter(e for e in errors.values() if not isinstance(e, ProtocolError)
                            or "aborted" not in str(e)), next(iter(errors.values())))
        return results


def inprocess_engine(n):
    parties = [f"p{i}" for i in range(n)]
    hub = InProcessHub([*parties, "dealer"], timeout_s=60)
    return Engine(hub.channels, parties)


@pytest.fixture(scope="module")
def grpc_engine(tmp_path_factory):
    """Three party nodes and a node serving as dealer, with a dealer certificate, over mTLS."""
    parties = ["p0", "p1", "p2"]
    layout = write_local_federation(tmp_path_factory.mktemp("mpc"), parties, dealers=["dealer"],
                                    limits={"rpc_timeout_s": 60.0})
    with InProcessNodes(layout) as nodes:
        assert nodes.nodes["dealer"].tls.identity.role.value == "dealer"

        def channels(job_id):
            spec = JobSpec(job_id, "test", (*parties, "dealer"))
            return {p: node._open_channel(spec) for p, node in nodes.nodes.items()}

        yield Engine(channels, parties)


@pytest.fixture(params=["inprocess-2", "inprocess-3", "inprocess-5", "grpc-3"])
def engine(request, grpc_engine):
    if request.param == "grpc-3":
        return grpc_engine
    return inprocess_engine(int(request.param.rsplit("-", 1)[1]))


def shares_of(values, bound, parties, rng=None):
    return share(encode(values, bound, F), len(parties), rng or Prg.from_os())


def open_result(results, parties):
    return reconstruct(np.stack([results[p][0] for p in parties]))


def test_beaver_products_are_exact_in_the_ring(engine):
    rng = Prg.from_os()
    x, y = rng.random_uint64(1000), rng.random_uint64(1000)
    sx, sy = share(x, len(engine.parties), rng), share(y, len(engine.parties), rng)
    results = engine.run(lambda ctx, prov: arithmetic.mul_ring(
        ctx, prov, sx[ctx.index], sy[ctx.index]))
    assert np.array_equal(open_result(results, engine.parties), x * y)


def test_fixed_point_product_is_within_one_ulp_and_records_only_masked_openings(engine):
    data = np.random.default_rng(5)  # test data only
    x, y = data.uniform(-1000, 1000, 5000), data.uniform(-1000, 1000, 5000)
    sx, sy = shares_of(x, 1000, engine.parties), shares_of(y, 1000, engine.parties)

    def program(ctx, prov):
        a = SharedArray(sx[ctx.index], 1000, F, ctx.is_leader)
        b = SharedArray(sy[ctx.index], 1000, F, ctx.is_leader)
        return arithmetic.mul(ctx, prov, a, b).share

    results = engine.run(program)
    z = decode(open_result(results, engine.parties))
    # error: encoding of x and y (|x|, |y| <= 1000, half an ulp each) plus 1 ulp of truncation
    assert np.max(np.abs(z - x * y)) <= 1000 * ULP + ULP * 2
    record = results[engine.parties[0]][1]
    assert record.summary() == {"beaver-differences": 10000, "masked-truncation-input": 5000}


def test_opening_gives_every_party_the_sum_in_one_round(engine):
    n = len(engine.parties)
    values = Prg.from_os().random_uint64(300)
    shares = share(values, n, Prg.from_os())

    def program(ctx, prov):
        before = ctx.channel.stats.messages_sent
        opened = arithmetic.open_all(ctx, [shares[ctx.index][:100], shares[ctx.index][100:]],
                                     "test")
        return opened, ctx.channel.stats.messages_sent - before

    results = engine.run(program)
    for party in engine.parties:
        first, second = results[party][0][0]
        assert np.array_equal(np.concatenate([first, second]), values)
        assert not first.flags.writeable  # in process, one array shared by the parties
        assert results[party][0][1] == n - 1  # its share, once to each other party


def test_matrix_ring_product_is_exact(engine):
    rng = Prg.from_os()
    x, y = rng.random_uint64((6, 9)), rng.random_uint64((9, 5))
    sx, sy = share(x, len(engine.parties), rng), share(y, len(engine.parties), rng)
    results = engine.run(lambda ctx, prov: arithmetic.matmul_ring(
        ctx, prov, sx[ctx.index], sy[ctx.index]))
    assert np.array_equal(open_result(results, engine.parties), np.matmul(x, y))


def test_matrix_product_is_exact_in_the_ring_and_fixed_point_close(engine):
    data = np.random.default_rng(6)
    x, y = data.uniform(-10, 10, (7, 13)), data.uniform(-10, 10, (13, 4))
    sx, sy = shares_of(x, 10, engine.parties), shares_of(y, 10, engine.parties)

    def program(ctx, prov):
        a = SharedArray(sx[ctx.index], 10, F, ctx.is_leader)
        b = SharedArray(sy[ctx.index], 10, F, ctx.is_leader)
        return arithmetic.matmul(ctx, prov, a, b).share

    z = decode(open_result(engine.run(program), engine.parties))
    assert np.max(np.abs(z - encode(x, 10, F).view(np.int64) @ encode(y, 10, F).view(np.int64)
                         / 2.0**(2 * F))) <= ULP
    assert np.max(np.abs(z - x @ y)) <= 13 * 20 * ULP


def test_gram_matrix_is_the_truncated_product_and_opens_each_element_once(engine):
    data = np.random.default_rng(7)
    x = data.uniform(-3, 3, (40, 5))
    sx = shares_of(x, 3, engine.parties)

    def program(ctx, prov):
        return arithmetic.gram(ctx, prov, SharedArray(sx[ctx.index], 3, F, ctx.is_leader)).share

    results = engine.run(program)
    z = decode(open_result(results, engine.parties))
    encoded = encode(x, 3, F).view(np.int64)
    assert np.max(np.abs(z - encoded.T @ encoded / 2.0**(2 * F))) <= ULP
    assert np.max(np.abs(z - x.T @ x)) <= 40 * 6 * ULP
    record = results[engine.parties[0]][1].summary()
    assert record == {"beaver-differences": 40 * 5, "masked-truncation-input": 25}


def test_a_gram_bound_the_caller_guarantees_widens_the_range_and_is_checked():
    engine = inprocess_engine(2)
    rows = 1 << 15
    x = np.random.default_rng(8).normal(size=(rows, 3))
    x /= np.linalg.norm(x, axis=0)  # unit columns: every |entry| of X^T X is at most 1
    f = 24
    sx = share(encode(x, 1.0, f), 2, Prg.from_os())

    def program(bound):
        def run(ctx, prov):
            ctx.fractional_bits = f
            return arithmetic.gram(ctx, prov, SharedArray(sx[ctx.index], 1.0, f, ctx.is_leader),
                                   bound).share
        return run

    with pytest.raises(ProtocolError, match="Gram matrix: the worst case .* leaves the exact range"):
        engine.run(program(None))  # k bound^2 2^(2f) = 2^63: out of range
    z = decode(open_result(engine.run(program(1.01)), engine.parties), f)
    assert np.max(np.abs(z - x.T @ x)) <= 2.0**-f * (1 + np.sqrt(rows))


@pytest.mark.parametrize("magnitude", [45, 50, 61])
def test_truncation_is_exact_at_large_magnitudes(magnitude):
    engine = inprocess_engine(3)
    rng = np.random.default_rng(magnitude)
    z = rng.integers(-(2**magnitude), 2**magnitude, 10**6, dtype=np.int64)
    shares = share(z.view(RING_DTYPE), 3, Prg.from_os())
    results = engine.run(lambda ctx, prov: arithmetic.truncate(ctx, prov, shares[ctx.index], F))
    got = open_result(results, engine.parties).view(np.int64)
    error = got - (z >> F)
    assert set(np.unique(error).tolist()) <= {0, 1}  # 1-ulp rounding, never a large error


# Property tests: every party count, fractional bits and magnitude in range, against the
# exact integer answer (each example runs the dealer and the parties in process).
in_range = st.integers(-(2**62) + 1, 2**62 - 1)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(0, 40),
       hnp.arrays(np.int64, st.integers(1, 50), elements=in_range))
def test_truncation_is_floor_or_one_more_for_every_value_in_range(parties, f, z):
    engine = inprocess_engine(parties)
    shares = share(z.view(RING_DTYPE), parties, Prg.from_os())
    results = engine.run(lambda ctx, prov: arithmetic.truncate(ctx, prov, shares[ctx.index], f))
    error = open_result(results, engine.parties).view(np.int64) - (z >> f)
    assert set(np.unique(error).tolist()) <= {0, 1}


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.sampled_from([1.0, 100.0, 2.0**14]), st.data())  # |x y| < 2^30
def test_fixed_point_products_are_the_truncated_integer_product(parties, bound, data):
    reals = hnp.arrays(np.float64, 20, elements=st.floats(-bound, bound))
    x, y = data.draw(reals), data.draw(reals)
    engine = inprocess_engine(parties)
    sx, sy = shares_of(x, bound, engine.parties), shares_of(y, bound, engine.parties)

    def program(ctx, prov):
        a = SharedArray(sx[ctx.index], bound, F, ctx.is_leader)
        b = SharedArray(sy[ctx.index], bound, F, ctx.is_leader)
        return arithmetic.mul(ctx, prov, a, b).share

    got = open_result(engine.run(program), engine.parties).view(np.int64)
    exact = encode(x, bound, F).view(np.int64) * encode(y, bound, F).view(np.int64)  # < 2^62
    assert set(np.unique(got - (exact >> F)).tolist()) <= {0, 1}


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), hnp.arrays(np.int64, st.integers(1, 50), elements=st.integers(
    -(2**62) + 2**F, 2**62 - 2**F)))
def test_less_than_zero_is_the_sign_of_every_value_in_range(parties, z):
    engine = inprocess_engine(parties)
    shares = share(z.view(RING_DTYPE), parties, Prg.from_os())
    bound = 2.0**46 - 1.0  # the largest whole bound in range with f = 16
    results = engine.run(lambda ctx, prov: comparison.less_than_zero(
        ctx, prov, SharedArray(shares[ctx.index], bound, F, ctx.is_leader)))
    assert np.array_equal(open_result(results, engine.parties), (z < 0).astype(np.uint64))


def test_a_single_value_is_shared_as_a_0_d_array_at_every_party():
    engine = inprocess_engine(3)
    results = engine.run(lambda ctx, prov: arithmetic.input_from(
        ctx, ctx.parties[0], np.array(2.5) if ctx.index == 0 else None, 3.0, (),
        Prg.from_os()).share)
    assert [results[p][0].shape for p in engine.parties] == [(), (), ()]
    assert decode(open_result(results, engine.parties)) == 2.5


def test_public_operations_and_reveal(engine):
    data = np.random.default_rng(7)
    x = data.uniform(-50, 50, 100)
    sx = shares_of(x, 50, engine.parties)

    def program(ctx, prov):
        a = SharedArray(sx[ctx.index], 50, F, ctx.is_leader)
        b = (a + 2.5 - a.scale(3)).sum()
        c = arithmetic.mul_public(ctx, prov, a, 0.25)
        return (arithmetic.reveal(ctx, b, ctx.parties[-1], "declared-output"),
                arithmetic.reveal(ctx, c, ctx.parties[-1], "declared-output"))

    results = engine.run(program)
    last = engine.parties[-1]
    total, quarter = results[last][0]
    assert results[engine.parties[0]][0] == (None, None)
    assert decode(total) == pytest.approx(np.sum(x + 2.5 - 3 * x), abs=400 * ULP)
    assert np.allclose(decode(quarter), x / 4, atol=2 * ULP)
    assert results[last][1].summary()["declared-output"] == 101


def test_input_sharing_reveals_nothing_and_reconstructs(engine):
    values = np.linspace(-3, 3, 64)

    def program(ctx, prov):
        before = ctx.channel.stats.bytes_received
        shared = arithmetic.input_from(ctx, ctx.parties[1], values if ctx.index == 1 else None,
                                       3.0, (64,), Prg.from_os())
        return shared.share, ctx.channel.stats.bytes_received - before

    results = engine.run(program)
    shares = np.stack([results[p][0][0] for p in engine.parties])
    assert np.allclose(decode(reconstruct(shares)), values, atol=ULP)
    # every other party got a 32-byte seed, not a share of 8 bytes per value
    assert [results[p][0][1] for p in engine.parties] == [
        0 if i == 1 else 32 for i in range(len(engine.parties))]
    assert len({s.tobytes() for s in shares}) == len(engine.parties)  # fresh, distinct shares


def test_out_of_range_products_are_refused_before_they_run(engine):
    sx = shares_of(np.ones(4), 2.0**16, engine.parties)

    def program(ctx, prov):
        a = SharedArray(sx[ctx.index], 2.0**16, F, ctx.is_leader)
        return arithmetic.mul(ctx, prov, a, a)  # |x y| could reach 2^32 >= 2^30

    with pytest.raises(ProtocolError, match="leaves the exact range .* refused before it runs"):
        engine.run(program)


def test_the_dealer_is_never_a_computing_party_and_tuples_are_never_reused():
    hub = InProcessHub(["p0", "p1", "dealer"])
    channels = hub.channels("j")
    with pytest.raises(ProtocolError, match="dealer cannot be a computing party"):
        MpcContext(channels["p0"], ("p0", "dealer"), "dealer")
    with pytest.raises(ProtocolError, match="dealer cannot be a computing party"):
        run_dealer(channels["dealer"], ("p0", "dealer"), Prg.from_os())
    # A request for a tuple id the dealer already issued is refused.
    import json

    def replay():  # request 1 asks for tuple 0 again
        for index, message in enumerate(({"kind": "triple", "id": 0, "shapes": [[2]]},
                                         {"kind": "triple", "id": 0, "shapes": [[2]]})):
            channels["p0"].send("dealer", request_step(index), json.dumps(message).encode())

    thread = threading.Thread(target=replay)
    thread.start()
    with pytest.raises(ProtocolError, match="tuple 0 as request 1; tuples are issued once each"):
        run_dealer(channels["dealer"], ("p0", "p1"), Prg.from_os())
    thread.join(5)


# --- comparison, reciprocal, inverse square root -------------------------------------------------

from invisible.protocols.mpc import comparison  # noqa: E402


def test_less_than_zero_is_exact_everywhere_in_range(engine):
    data = np.random.default_rng(9)
    values = np.concatenate([
        data.uniform(-1000, 1000, 400), [0.0, ULP, -ULP, 2.0**40, -(2.0**40), 2.0**45 - 1],
        data.integers(-(2**61), 2**61, 200).astype(np.float64) / 2.0**F,
    ])
    bound = float(np.abs(values).max())
    sx = shares_of(values, bound, engine.parties)
    results = engine.run(lambda ctx, prov: comparison.less_than_zero(
        ctx, prov, SharedArray(sx[ctx.index], bound, F, ctx.is_leader)))
    bits = open_result(results, engine.parties)
    expected = (encode(values, bound, F).view(np.int64) < 0).astype(np.uint64)
    assert np.array_equal(bits, expected)
    assert "masked-comparison-input" in results[engine.parties[0]][1].summary()


def test_reciprocal_and_rsqrt_within_their_stated_bounds():
    engine = inprocess_engine(3)
    x = np.concatenate([np.geomspace(0.01, 1000, 300), [0.01, 1.0, 999.0]])
    sx = shares_of(x, 1000, engine.parties)

    def program(ctx, prov):
        value = SharedArray(sx[ctx.index], 1000, F, ctx.is_leader)
        return (comparison.reciprocal(ctx, prov, value, 0.01, 1000).share,
                comparison.rsqrt(ctx, prov, value, 0.01, 1000).share)

    results = engine.run(program)
    recip = decode(reconstruct(np.stack([results[p][0][0] for p in engine.parties])))
    root = decode(reconstruct(np.stack([results[p][0][1] for p in engine.parties])))
    # Against the encoded input x^ (the protocol cannot know x better than f bits): the
    # error of the computation itself. Quantising x adds |d(1/x)| <= 2^-(f+1) / x^2 on top.
    x_hat = decode(encode(x, 1000, F))
    assert np.all(np.abs(recip - 1 / x_hat) <= ULP * (4 + 2 / x_hat))
    assert np.all(np.abs(root - 1 / np.sqrt(x_hat)) <= ULP * (4 + 2 / x_hat))


def test_a_domain_must_be_declared():
    engine = inprocess_engine(2)
    sx = shares_of(np.ones(3), 10, engine.parties)
    with pytest.raises(ProtocolError, match="declared domain"):
        engine.run(lambda ctx, prov: comparison.reciprocal(
            ctx, prov, SharedArray(sx[ctx.index], 10, F, ctx.is_leader), 1.0, 5.0))


def test_a_requested_tuple_is_collected_once_and_arrives_while_parties_work():
    engine = inprocess_engine(2)

    def program(ctx, prov):
        first = prov.request("triple", [(4,)])
        second = prov.request("trunc", [(4,)], F)  # asked before the first is collected
        a, b, c = prov.collect(first).all()
        prov.collect(second).all()
        with pytest.raises(ProtocolError, match="already used"):
            prov.collect(first)
        return a, b, c

    results = engine.run(program)
    a, b, c = (reconstruct(np.stack([results[p][0][k] for p in engine.parties]))
               for k in range(3))
    assert np.array_equal(a * b, c)


U64, SHIFT = np.uint64, np.uint64(1 << 62)


def truncation_parts_agree(r, high, low):
    assert np.array_equal(high, (r >> U64(63)) << U64(63 - F))
    assert np.array_equal(low, ((r & U64((1 << 63) - 1)) >> U64(F)) + U64(1 << (62 - F)))


def triple_holds(a, b, c):
    assert np.array_equal(c, a * b)


def matrix_holds(a, b, c):
    assert c.shape == (4, 3) and np.array_equal(c, a @ b)


def trunc_holds(masks, high, low):
    truncation_parts_agree(masks - SHIFT, high, low)


def triple_trunc_holds(a, b, c_masked, high, low):
    truncation_parts_agree(c_masked - a * b - SHIFT, high, low)


def matrix_trunc_holds(a, b, c_masked, high, low):
    truncation_parts_agree(c_masked - a @ b - SHIFT, high, low)


def gram_holds(b, c):
    assert c.shape == (3, 3) and np.array_equal(c, b.T @ b)


def gram_trunc_holds(b, c_masked, high, low):
    truncation_parts_agree(c_masked - b.T @ b - SHIFT, high, low)


def digit_cmp_holds(r, top, one_hots):
    assert one_hots.shape == (7, 8, 50)  # 21 bits: seven 3-bit digits
    assert np.array_equal(top, (r >> U64(21)) & U64(1))
    digits = [(r >> U64(3 * j)) & U64(7) for j in range(7)]
    assert np.array_equal(one_hots, np.stack([(np.arange(8)[:, None] == d.astype(int))
                                              .astype(U64) for d in digits]))


def cmp_holds(r, msb, top, *bits):
    assert len(bits) == CMP_BITS
    assert np.array_equal(msb, r >> U64(63))
    assert np.array_equal(top, (r & U64((1 << 63) - 1)) >> U64(62))
    assert np.array_equal(sum(bit << U64(i) for i, bit in enumerate(bits)), r & U64((1 << 62) - 1))


def bucket_holds(r, bits, rho_low, rho_high, low, high):
    assert bits.shape == (7, 50) and low.shape == (50, 4) and high.shape == (50, 8)
    assert np.array_equal(sum(bit << U64(i) for i, bit in enumerate(bits)), r & U64(127))
    assert (rho_low < U64(4)).all() and (rho_high < U64(8)).all()
    assert len(set(rho_high.tolist())) > 1  # drawn, not constant
    for one_hot, index in ((low, (rho_low + (r >> U64(5))) & U64(3)),
                           (high, (rho_high + (r >> U64(7))) & U64(7))):
        expected = np.arange(one_hot.shape[1]) == index[:, None].astype(int)
        assert np.array_equal(one_hot, expected.astype(U64))


#: For every kind in the catalogue: shapes to ask for, and a check of what its doc promises.
PROMISES = {
    "triple": ([(50,)], triple_holds),
    "matrix": ([(4, 6), (6, 3)], matrix_holds),
    "trunc": ([(50,)], trunc_holds),
    "triple-trunc": ([(50,)], triple_trunc_holds),
    "matrix-trunc": ([(4, 6), (6, 3)], matrix_trunc_holds),
    "gram": ([(7, 3)], gram_holds),
    "gram-trunc": ([(7, 3)], gram_trunc_holds),
    "cmp": ([(50,)], cmp_holds),
    "cmp-digits": ([(50,), (21,)], digit_cmp_holds),
    "bucket": ([(50, 4), (50, 8), (7,)], bucket_holds),
}


@pytest.mark.parametrize("parties", [2, 3])
def test_every_tuple_kind_reconstructs_to_what_it_promises(parties):
    untested = sorted(set(CATALOGUE) - set(PROMISES))
    assert untested == [], f"catalogue entries without a check in PROMISES: {untested}"
    engine = inprocess_engine(parties)
    kinds = list(CATALOGUE)
    results = engine.run(lambda ctx, prov: [prov.take(kind, PROMISES[kind][0], F).all()
                                            for kind in kinds])
    for i, kind in enumerate(kinds):
        count = len(results[engine.parties[0]][0][i])
        components = [reconstruct(np.stack([results[p][0][i][k] for p in engine.parties]))
                      for k in range(count)]
        assert [c.shape for c in components] == component_shapes(kind, PROMISES[kind][0])
        PROMISES[kind][1](*components)


def test_tuple_requests_name_an_unknown_kind_or_shapes_that_do_not_fit():
    for kind, shapes in [("square", [(3,)]), ("triple", [(3,), (3,)]), ("matrix", [(4, 6), (5, 3)]),
                         ("matrix-trunc", [(4,), (4,)])]:
        with pytest.raises(ProtocolError, match=f"unknown tuple kind or shapes: {kind} "):
            component_shapes(kind, shapes)


def test_random_components_need_no_message_and_dependent_ones_go_to_each_party_in_turn():
    engine = inprocess_engine(3)

    def program(ctx, prov):
        received = []
        for _ in range(3):  # tuples 0, 1, 2: their dependent shares go to p2, p0, p1
            shares = prov.take("triple-trunc", [(1000,)], F)
            before = ctx.channel.stats.bytes_received
            a, b = shares[0], shares[1]
            random_only = ctx.channel.stats.bytes_received - before
            shares[2]
            received.append((a.size + b.size, random_only,
                             ctx.channel.stats.bytes_received - before))
        return received

    results = engine.run(program)
    for i, party in enumerate(engine.parties):
        for t, (random_size, random_only, dependent) in enumerate(results[party][0]):
            assert (random_size, random_only) == (2000, 0)  # no message for a and b
            # one party per tuple receives, only the dependent components: c + r, H and L
            assert dependent == (3 * 1000 * 8 if (t - 1) % 3 == i else 0)


def test_less_than_and_select(engine):
    data = np.random.default_rng(12)
    x, y = data.uniform(-50, 50, 200), data.uniform(-50, 50, 200)
    sx, sy = shares_of(x, 50, engine.parties), shares_of(y, 50, engine.parties)

    def program(ctx, prov):
        a = SharedArray(sx[ctx.index], 50, F, ctx.is_leader)
        b = SharedArray(sy[ctx.index], 50, F, ctx.is_leader)
        bit = comparison.less_than(ctx, prov, a, b)
        return bit, comparison.select(ctx, prov, bit, a).share  # min-side value where x < y

    results = engine.run(program)
    bits = reconstruct(np.stack([results[p][0][0] for p in engine.parties]))
    chosen = decode(reconstruct(np.stack([results[p][0][1] for p in engine.parties])))
    x_hat, y_hat = decode(encode(x, 50, F)), decode(encode(y, 50, F))
    assert np.array_equal(bits, (x_hat < y_hat).astype(np.uint64))
    assert np.array_equal(chosen, np.where(x_hat < y_hat, x_hat, 0.0))


@pytest.mark.parametrize("rows", [(1, 0), (1, 1), (2, 1), (3, 2), (4, 4), (9, 7)])
def test_sample_variance_divides_by_count_minus_one(rows):
    """ddof = 1 for small counts, where N/(N-1) matters; a single row gives 0."""
    from invisible.protocols.mpc.statistics import shared_totals, statistics

    engine = inprocess_engine(2)
    rng = np.random.default_rng(sum(rows))  # test data, not protected
    columns = [rng.uniform(-50, 50, n) for n in rows]
    values = np.concatenate(columns)

    def program(ctx, provider):
        mine = columns[ctx.index]
        local = (float(mine.size), float(mine.sum()), float(np.square(mine).sum()))
        totals = shared_totals(ctx, local, 50.0, 16, Prg.from_os())
        population = statistics(ctx, provider, totals, 50.0, 16)
        sample = statistics(ctx, provider, totals, 50.0, 16, ddof=1)
        return np.stack([population.share, sample.share])

    opened = decode(open_result(engine.run(program), engine.parties), F)
    tolerance = 2.0**-F * (3 * np.mean(values**2) + 2 * abs(values.mean()) + 8) * 2
    assert opened[0, 3] == pytest.approx(values.var(), abs=tolerance)
    expected = values.var(ddof=1) if values.size > 1 else 0.0
    assert opened[1, 3] == pytest.approx(expected, abs=tolerance)
    assert opened[1, 2] == pytest.approx(values.mean(), abs=tolerance)  # the rest unchanged


class CountingProvider:
    """Counts the tuples a program asks for, then passes the requests on."""

    def __init__(self, provider, counts, party):
        self.provider, self.counts, self.party = provider, counts, party

    def request(self, kind, shapes, fractional_bits=0):
        self.counts[self.party] = self.counts.get(self.party, 0) + 1
        return self.provider.request(kind, shapes, fractional_bits)

    def collect(self, ticket):
        return self.provider.collect(ticket)

    def take(self, kind, shapes, fractional_bits=0):
        return self.collect(self.request(kind, shapes, fractional_bits))


@pytest.mark.parametrize(("function", "bound", "lo", "hi"), [
    ("reciprocal", 2.0**40, 2.0**-14, 2.0**40),  # hi y0 = 1.5 hi / lo leaves the exact range
    ("rsqrt", 2.0**40, 2.0**-14, 2.0**40),       # x y^2 leaves it
    ("reciprocal", 2.0**16, 2.0**-14, 2.0**16),  # just past the edge: 1.5 x 2^30 >= 2^30
    ("reciprocal", 10.0, 1.0, float("inf")),
    ("rsqrt", 10.0, float("nan"), 20.0),
])
def test_a_domain_the_functions_cannot_handle_is_refused_before_any_tuple(function, bound, lo, hi):
    engine = inprocess_engine(2)
    sx = shares_of(np.ones(3), bound, engine.parties)
    counts = {}

    def program(ctx, prov):
        counting = CountingProvider(prov, counts, ctx.me)
        value = SharedArray(sx[ctx.index], bound, F, ctx.is_leader)
        return getattr(comparison, function)(ctx, counting, value, lo, hi).share

    with pytest.raises(ProtocolError, match="declared domain|refused before it runs"):
        engine.run(program)
    assert counts == {}


@pytest.mark.parametrize("function", ["reciprocal", "rsqrt"])
def test_a_domain_at_the_edge_of_the_exact_range_still_runs(function):
    """lo = 2^-14, hi = 2^15: 1.5 hi / lo (reciprocal) and 1.69 hi / lo (rsqrt) stay below
    2^30, so every product's 2f-bit intermediate fits 2^62."""
    engine = inprocess_engine(2)
    x = np.array([2.0**-14, 1.0, 2.0**15])
    sx = shares_of(x, 2.0**15, engine.parties)

    def program(ctx, prov):
        value = SharedArray(sx[ctx.index], 2.0**15, F, ctx.is_leader)
        return getattr(comparison, function)(ctx, prov, value, 2.0**-14, 2.0**15).share

    result = decode(open_result(engine.run(program), engine.parties))
    expected = 1 / x if function == "reciprocal" else 1 / np.sqrt(x)
    assert np.all(np.abs(result - expected) <= ULP * (4 + 2 / x))


def values_within(data, bits):
    """Ring integers below 2^bits in magnitude (drawn, then the ends, -1, 0 and 1), and their
    bound as a fixed-point value."""
    limit = 2**bits - 1
    values = data.draw(hnp.arrays(np.int64, st.integers(1, 40),
                                  elements=st.integers(-limit, limit)))
    return np.concatenate([values, [-limit, limit, -1, 0, 1]]), limit / 2.0**F


def run_on_values(function, parties, z, bound):
    """`function(ctx, provider, x)` on shares of z among `parties`; the opened result."""
    engine = inprocess_engine(parties)
    shares = share(z.view(RING_DTYPE), parties, Prg.from_os())
    results = engine.run(lambda ctx, prov: function(
        ctx, prov, SharedArray(shares[ctx.index], bound, F, ctx.is_leader)))
    return open_result(results, engine.parties)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 4), st.integers(1, 60), st.data())
def test_a_narrow_comparison_is_the_sign_of_every_value_below_its_width(parties, bits, data):
    """For |x| 2^f < 2^m, the comparison on m bits is exact: including -1, 0 and the ends."""
    from invisible.protocols.mpc.comparison import less_than_zero_narrow, narrow_width

    z, bound = values_within(data, bits)
    x = SharedArray(np.zeros(z.shape, RING_DTYPE), bound, F)
    assert narrow_width(x) <= bits + 3 and narrow_width(x) % 3 == 0  # whole 3-bit digits
    opened = run_on_values(less_than_zero_narrow, parties, z, bound)
    assert np.array_equal(opened, (z < 0).astype(np.uint64))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 4), st.integers(1, 59), st.data())
def test_times_negative_is_min_of_x_and_zero_exactly(parties, bits, data):
    """x [x < 0] in the comparison's rounds: exact at every width, including -1, 0, 1."""
    from invisible.protocols.mpc.comparison import times_negative

    z, bound = values_within(data, bits)
    opened = run_on_values(times_negative, parties, z, bound)
    assert np.array_equal(opened.view(np.int64), np.minimum(z, 0))


def test_a_narrow_comparison_opens_and_multiplies_less():
    from invisible.protocols.mpc.comparison import less_than_zero_narrow

    x = np.random.default_rng(3).uniform(-1000, 1000, 512)
    sx = shares_of(x, 1000, ("p0", "p1"))

    def program(function):
        def run(ctx, prov):
            bits = function(ctx, prov, SharedArray(sx[ctx.index], 1000.0, F, ctx.is_leader))
            return bits, ctx.channel.stats.bytes_sent
        return run

    narrow = inprocess_engine(2).run(program(less_than_zero_narrow))
    wide = inprocess_engine(2).run(program(comparison.less_than_zero))
    for results in (narrow, wide):
        assert np.array_equal(reconstruct(np.stack([results[p][0][0] for p in ("p0", "p1")])),
                              (x < 0).astype(np.uint64))
    # |x| 2^16 < 2^26: 26 bits and one product against 62 bits
    assert narrow["p0"][0][1] < 0.5 * wide["p0"][0][1]


def test_rerandomised_shares_open_to_the_same_value_and_are_fresh(engine):
    """What the dealer knows of a party's share (it made the tuples the share came from)
    tells nothing of the share after: every party's share changes by a stream only its
    pairs know, and the shares still add up to the same value."""
    rng = Prg.from_os()
    values = rng.random_uint64(64)
    parts = share(values, len(engine.parties), rng)

    def program(ctx, provider):
        x = SharedArray(parts[ctx.index], 1.0, F, ctx.is_leader)
        return arithmetic.rerandomise(ctx, x, Prg.from_os()).share

    results = engine.run(program)
    fresh = np.stack([results[p][0] for p in engine.parties])
    assert np.array_equal(reconstruct(fresh), values)
    assert not np.any(fresh == parts)  # every share moved (2^-64 per element by chance)
