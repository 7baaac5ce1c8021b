"""One memory budget for the whole server, and what each forward pass will cost before it runs.

A request's cost is estimated from its shape alone (rows x tokens, the layers and widths of the loaded
model, whether every layer's states are kept, how many positions get the 250k-word output layer), so it
can wait or be refused before anything is allocated. ``Budget`` hands out memory: a pass that fits runs at
once, one that does not waits in line, one that could never fit is refused with a message. Private copies
of the model (fine-tuning) hold part of it for as long as they live.

The estimates are upper bounds checked against measured peaks (tests/test_budget.py on a model of
xmod-base's width, benchmarks/serve.py at its full shape); they count what a pass allocates on top of the
loaded weights, which are not part of the budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xmod_explorer.errors import ExplorerError

GiB = 2**30
MiB = 2**20
# What a request allocates besides its tensors: Python objects, tokenizer output, the JSON answer.
REQUEST_OVERHEAD = 24 * MiB
# Measured peaks stay below the estimate times this; the margin covers allocator slack.
SLACK = 1.25
# Private copies (fine-tuned models) may hold at most this share of the budget, so requests always fit.
HOLD_SHARE = 0.5
# A pass that waits for memory this long stops others from taking the memory it needs, so it cannot starve.
AGING_SECONDS = 5.0
# Waiting passes go least work per request first (a pass shared by n requests counts its work over n: the order that
# keeps the sum of their waits lowest); each AGING_RATE seconds of waiting count as one second less work, so a long
# pass is not overtaken for ever either.
AGING_RATE = 10.0
DEFAULT_SPEED = 1e11  # floating-point operations per second assumed before any is measured


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide what a forward pass costs."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int
    adapter: int  # the language adapter's bottleneck width
    value_bytes: int = 4  # 4 for float32, 2 for float16 and bfloat16

    @classmethod
    def from_config(cls, config, value_bytes: int = 4) -> ModelShape:
        """From a transformers XmodConfig (or anything with the same attributes)."""
        hidden = int(config.hidden_size)
        reduction = float(getattr(config, "adapter_reduction_factor", 2) or 2)
        return cls(
            layers=int(config.num_hidden_layers),
            hidden=hidden,
            heads=int(config.num_attention_heads),
            intermediate=int(config.intermediate_size),
            vocab=int(config.vocab_size),
            adapter=max(1, int(hidden / reduction)),
            value_bytes=value_bytes,
        )


@dataclass(frozen=True)
class Cost:
    """Peak memory (bytes, on top of the weights) and work (floating-point operations) of one pass."""

    bytes: int
    flops: float
    what: str = "This request"

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.bytes + other.bytes, self.flops + other.flops, self.what)


def forward_cost(
    shape: ModelShape,
    rows: int,
    tokens: int,
    *,
    layer_copies: int = 0,
    output_positions: int = 0,
    grad: bool = False,
    what: str = "This request",
) -> Cost:
    """What one encoder pass over rows x tokens (padded length) costs.

    layer_copies: 0 when only the last layer is returned; n when every layer's states are, and n copies of
    them (the model's own included) exist at once while the analysis reads them.
    output_positions: positions per row that go through the vocabulary projection (masks).
    grad: the pass keeps what the backward pass needs (fine-tuning).
    """
    b, t, v = max(rows, 1), max(tokens, 1), shape.value_bytes
    h, f, a, heads, layers = shape.hidden, shape.intermediate, shape.adapter, shape.heads, shape.layers
    # One layer at a time: attention scores, their softmax and the masked copy; queries, keys, values,
    # context, projections and residuals; the feed-forward block's two wide tensors; the adapter.
    per_layer = b * (3 * heads * t * t + 10 * t * h + 2 * t * f + 2 * t * a) * v
    states = b * t * h * v
    memory = per_layer + 3 * states  # plus the embeddings' sum and LayerNorm, and the layer's input
    memory += layer_copies * (layers + 1) * b * t * h * max(v, 4)  # analyses copy states to float32
    if grad:
        memory += layers * per_layer  # every layer's activations wait for the backward pass
    if output_positions:
        # The output layer at those positions, then softmax, log-softmax and top-k in float32.
        memory += b * output_positions * (2 * h * v + 3 * shape.vocab * 4)
    work = 2.0 * b * layers * (4 * t * h * h + 2 * t * t * h + 2 * t * h * f + 2 * t * h * a)
    work += 2.0 * b * output_positions * (h * h + h * shape.vocab)
    if grad:
        work *= 3  # the backward pass costs about twice the forward
    return Cost(int(memory * SLACK) + REQUEST_OVERHEAD, work, what)


def describe_bytes(count: float) -> str:
    """1.5 GiB, 300 MiB: how a person reads a size."""
    if count >= GiB:
        return f"{count / GiB:.1f} GiB"
    return f"{count / MiB:.0f} MiB" if count >= 10 * MiB else f"{count / MiB:.1f} MiB"


@dataclass
class _Ticket:
    cost: Cost
    hold: bool = False
    since: float = field(default_factory=time.monotonic)
    serves: int = 1  # requests the pass answers


class Reservation:
    """Memory taken from a Budget; release() gives it back (once; later calls do nothing)."""

    def __init__(self, budget: Budget, count: int, what: str, *, held: bool = False, threads: int | None = None):
        self.budget = budget
        self.bytes = count
        self.what = what
        self.held = held
        self.threads = threads  # processor threads the pass may use (None: leave the library's setting alone)
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.budget.give_back(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Budget:
    """The server's memory and processor for requests, shared by every endpoint and session.

    reserve() waits until the pass fits (memory, and one of max_running places) and is the most urgent that does
    (least work per request served first, with aging), checking the caller's stop condition while it waits; it
    refuses at once a cost that could never fit. reserve(hold=True) takes memory for as long as a private copy lives.
    """

    def __init__(
        self,
        capacity_bytes: int,
        *,
        flops_per_second: float | None = None,
        max_running: int | None = None,
        threads: int | None = None,
    ):
        if capacity_bytes <= 0:
            raise ExplorerError("The memory budget must be positive.")
        self.capacity = int(capacity_bytes)
        self.flops_per_second = flops_per_second
        # Passes at once: on a CPU, more than its cores only slows every pass down (None: no limit).
        self.max_running = max_running
        # A CPU's threads, shared among the passes running: a pass that starts alone gets them all, one that
        # starts beside k others a (k + 1)-th of them (None: each pass uses the library's own setting). Two passes
        # of two threads each on two cores wait for each other at every operator.
        self.threads = threads
        self._cond = threading.Condition()
        self._in_use = 0
        self._held = 0
        self._running = 0
        self._waiting: list[_Ticket] = []

    # ----- what it would take ---------------------------------------------------------------------

    def seconds(self, cost: Cost) -> float | None:
        """At least how many seconds cost takes, at the best speed seen on this machine (a plain matrix product
        at start-up, raised by every faster pass since); None when the speed is unknown."""
        if not self.flops_per_second:
            return None
        return cost.flops / self.flops_per_second

    def observe(self, cost: Cost, seconds: float) -> None:
        """A pass of cost took seconds: remember the speed if it is the best seen."""
        if seconds > 0 and cost.flops > 0:
            with self._cond:
                self.flops_per_second = max(self.flops_per_second or 0.0, cost.flops / seconds)

    def room_for_requests(self) -> int:
        """The memory passes may use: the budget less what private copies hold."""
        return self.capacity - self._held

    def status(self) -> dict:
        """How much is in use, held, running and waiting (for the log, tests and the benchmark)."""
        with self._cond:
            return {
                "capacity": self.capacity,
                "in_use": self._in_use,
                "held": self._held,
                "running": self._running,
                "waiting": len(self._waiting),
            }

    # ----- taking and giving back -------------------------------------------------------------------

    def reserve(
        self,
        cost: Cost,
        *,
        check: Callable[[], None] | None = None,
        hold: bool = False,
        poll: float = 0.2,
        serves: int = 1,
    ) -> Reservation:
        """Wait until cost fits, then take it; check() is called while waiting and may raise to give up.

        serves: how many users' requests the pass answers (a batcher's shared pass): its place in the line is
        that of its work divided among them, so sharing a pass never sends short requests to the back.

        hold=True: the memory stays taken after the request (a session's private copy of the model) until
        the reservation is released; such holds together may use at most HOLD_SHARE of the budget.
        """
        with self._cond:
            self.refuse_if_it_could_never_fit(cost, hold)
            ticket = _Ticket(cost, hold, serves=max(1, int(serves)))
            self._waiting.append(ticket)
            try:
                while not self._fits(ticket):
                    self._cond.wait(poll)
                    if check is not None:
                        check()
                    self.refuse_if_it_could_never_fit(cost, hold)  # a hold may have come meanwhile
            except BaseException:
                self._waiting.remove(ticket)
                self._cond.notify_all()
                raise
            self._waiting.remove(ticket)
            self._in_use += cost.bytes
            if hold:
                self._held += cost.bytes
            else:
                self._running += 1
            threads = None if hold or not self.threads else max(1, self.threads // self._running)
            return Reservation(self, cost.bytes, cost.what, held=hold, threads=threads)

    def refuse_if_it_could_never_fit(self, cost: Cost, hold: bool = False) -> None:
        """Raise ExplorerError if cost could not fit even with nothing else running."""
        what = cost.what
        if hold:
            limit = int(self.capacity * HOLD_SHARE)
            if self._held + cost.bytes > limit:
                raise ExplorerError(
                    f"{what} needs about {describe_bytes(cost.bytes)} for as long as your session lasts, and this "
                    f"server keeps at most {describe_bytes(limit)} for such copies ({describe_bytes(self._held)} "
                    "taken now). Try again later, or train the probe without fine-tuning."
                )
            return
        room = self.room_for_requests()
        if cost.bytes > room:
            held = f" ({describe_bytes(self._held)} of it held by fine-tuned copies)" if self._held else ""
            raise ExplorerError(
                f"{what} needs about {describe_bytes(cost.bytes)} of memory; this server has "
                f"{describe_bytes(room)} for requests{held}, so it could never run here. Use fewer languages, "
                "rows or tokens."
            )

    def give_back(self, reservation: Reservation) -> None:
        with self._cond:
            self._in_use -= reservation.bytes
            if reservation.held:
                self._held -= reservation.bytes
            else:
                self._running -= 1
            self._cond.notify_all()

    def _urgency(self, ticket: _Ticket, now: float) -> float:
        """Seconds of work per request served, less the credit of having waited: lower goes first."""
        work = ticket.cost.flops / (self.flops_per_second or DEFAULT_SPEED) / ticket.serves
        return work - (now - ticket.since) / AGING_RATE

    def _fits(self, ticket: _Ticket) -> bool:
        if self._in_use + ticket.cost.bytes > self.capacity:
            return False
        if ticket.hold:
            return True
        if self.max_running is not None and self._running >= self.max_running:
            return False
        now = time.monotonic()
        mine = self._urgency(ticket, now)
        for other in self._waiting:
            if other is ticket or other.hold:
                continue
            theirs = self._urgency(other, now)
            if theirs < mine or (theirs == mine and other.since < ticket.since):
                if self._in_use + other.cost.bytes <= self.capacity:
                    return False  # a more urgent pass can go now: it goes first
                if now - other.since > AGING_SECONDS and self._in_use + ticket.cost.bytes + other.cost.bytes > (
                    self.capacity
                ):
                    return False  # it has waited long for memory: leave it the room it needs
        return True
