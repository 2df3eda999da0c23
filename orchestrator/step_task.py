"""The runtime around every step: envelope in, idempotency, the call, envelope out, failures.

A step's message is acknowledged only after the step finished (``acks_late``). What happens
on an error is decided here, once for all steps:

- a retryable error with retries left: ``self.retry`` with exponential backoff and jitter
  (Celery acks the old message and publishes a new one carrying the retry count);
- a final error, or retries exhausted: the message is published to ``<queue>.dlq`` with the
  failure details, then the task fails (result stored, errbacks run) and the message is acked;
- the worker process dies (crash, OOM, hard time limit): the message is requeued by the broker
  and, past the queue's delivery limit, dead-lettered by it with reason ``delivery_limit``;
- anything that fails around the step rather than in it (Celery's call into the task, storing
  the result): :class:`~orchestrator.step_request.StepRequest` rejects the message without
  requeue, and the broker (or transport) dead-letters it with reason ``rejected``. Only a
  failure this runtime dead-lettered itself is acked.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, NoReturn

from celery import Task
from celery.app import trace as celery_trace
from celery.exceptions import Reject, Retry
from celery.utils.log import get_task_logger

from orchestrator import headers as message_headers
from orchestrator.correlation import HEADER, bind_correlation_id, correlation_id_from_request
from orchestrator.envelope import Envelope, EnvelopeError
from orchestrator.events import publisher as events
from orchestrator.failures import dead_letter
from orchestrator.failures.decision import DeadLetterNow, decide_failure
from orchestrator.failures.errors import StepInProgress
from orchestrator.failures.outcome import mark_dead_lettered
from orchestrator.idempotency import (
    Busy,
    IdempotencyStore,
    IdempotencyWrite,
    RedisIdempotencyStore,
    default_idempotency_key,
    pending_records,
)
from orchestrator.result_backend import StepResultBackend
from orchestrator.settings import get_settings
from orchestrator.step_spec import StepContext, StepSpec
from orchestrator.topology import dlq_name
from orchestrator.trace import hooks as trace

logger = get_task_logger("orchestrator.step")

# Celery's success line, without ": <return value>" (see StepTask.resultrepr_maxsize).
celery_trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"

FIRST_FAILURE_HEADER = message_headers.FIRST_FAILURE_AT
EVENT_KEY_ATTRIBUTE = "orchestrator_event_key"
"""Where a running step keeps its idempotency key for the result event's id."""


class InvalidArguments(TypeError):
    """The message's arguments are not those of a step: ``(entrada[, options])``."""


class StepTask(Task):  # type: ignore[misc]
    """Base class of every escavador and executador task."""

    step_spec: ClassVar[StepSpec]
    # Acked after the work; a failure is acked only once this runtime dead-lettered it (the
    # request class rejects any other failure, so the broker dead-letters it instead).
    Request = "orchestrator.step_request:StepRequest"
    acks_late = True
    acks_on_failure = True
    acks_on_timeout = False  # a hard time limit requeues: the delivery limit bounds it
    reject_on_worker_lost = True
    max_retries = None  # the step's RetryPolicy decides, not Celery's counter
    # No signature check when publishing: a message with wrong arguments reaches the step's
    # entry point, which takes any arguments, and is dead-lettered as invalid_arguments.
    typing = False
    # Celery formats every return value (up to this many characters) for the success log
    # line and the task-succeeded event: the reply envelope, payload and all, where secrets
    # have no place (the arguments are described without it, ``pipeline.args_description``),
    # and walking the whole envelope on every step is work nobody needs. Nothing is
    # formatted: the log line has no return value (LOG_SUCCESS above) and the event names
    # the envelope's kind (``StepRequest.send_event``).
    resultrepr_maxsize = 0

    _store: ClassVar[IdempotencyStore | None] = None

    @classmethod
    def idempotency_store(cls) -> IdempotencyStore:
        """The shared store, created on first use in each worker process."""
        if StepTask._store is None:
            settings = get_settings()
            StepTask._store = RedisIdempotencyStore.from_url(
                settings.idempotency_url or settings.result_backend
            )
        return StepTask._store

    def run_step(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        spec = self.step_spec
        try:
            entrada, options = step_arguments(args, kwargs)
        except InvalidArguments as exc:
            self._dead_letter_and_raise(exc, dead_letter.REASON_INVALID_ARGUMENTS, None)
        try:
            inputs = parse_inputs(entrada, spec)
        except EnvelopeError as exc:
            self._dead_letter_and_raise(exc, dead_letter.REASON_INVALID_ENVELOPE, None)
        correlation_id = str(inputs[0].correlation_id)
        bind_correlation_id(correlation_id)
        header_value = correlation_id_from_request(self.request)
        if header_value and header_value != correlation_id:
            logger.warning("header %s=%s differs from the envelope's; using the envelope's",
                           HEADER, header_value)
        context = self._context(spec, correlation_id, inputs, options)
        try:
            return self._run_once(spec, context)
        except (Retry, Reject):
            raise
        except Exception as exc:
            self._handle_failure(exc, correlation_id)
            raise

    def _context(
        self,
        spec: StepSpec,
        correlation_id: str,
        inputs: tuple[Envelope, ...],
        options: dict[str, Any],
    ) -> StepContext:
        draft = StepContext(
            correlation_id=correlation_id,
            step=spec.task_name,
            task_id=str(self.request.id),
            attempt=int(self.request.retries or 0) + 1,
            inputs=inputs,
            options=options,
            idempotency_key=default_idempotency_key(
                correlation_id, spec.task_name, self.request.group_index
            ),
            settings=get_settings(),
            logger=logger,
        )
        if spec.idempotency_key is None:
            return draft
        return StepContext(**{**draft.__dict__, "idempotency_key": spec.idempotency_key(draft)})

    def _run_once(self, spec: StepSpec, context: StepContext) -> dict[str, Any]:
        store = self.idempotency_store()
        key = context.idempotency_key
        setattr(self.request, EVENT_KEY_ATTRIBUTE, key)
        owner = context.task_id
        claimed = store.claim_or_result(key, owner, ttl=int(spec.time_limit) + 60)
        if isinstance(claimed, Busy):
            raise StepInProgress(f"another delivery of {key} is running")
        if claimed is not None:
            logger.info("step already done for key %s: returning the stored result", key)
            return claimed
        try:
            payload_out = spec.function(merged_payload(context.inputs), context)
            if not isinstance(payload_out, dict):
                raise TypeError(
                    f"{spec.task_name} returned {type(payload_out).__name__}, not a dict payload"
                )
            reply = context.inputs[0].reply(spec.produces, payload_out).to_dict()
        except BaseException:
            store.release(key, owner)
            raise
        self._keep_result(store, IdempotencyWrite(key, owner, reply,
                                                  get_settings().idempotency_ttl))
        return reply

    def _keep_result(self, store: IdempotencyStore, write: IdempotencyWrite) -> None:
        """Store the step's result under its idempotency key and drop the claim: in the
        round trip of the task result when the result backend is the same Redis."""
        settings = get_settings()
        rides_along = (isinstance(self.backend, StepResultBackend)
                       and settings.idempotency_url in (None, settings.result_backend))
        pending_records.keep(str(self.request.id), write, store, rides_along=rides_along)

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Publish the result envelope as a plain event (:mod:`orchestrator.events`): after
        Celery stored the result, before the message is acknowledged. Its id comes from the
        idempotency key: every delivery that returns this stored result publishes the same
        event."""
        trace.succeeded(self, task_id)
        if isinstance(retval, dict):
            key = getattr(self.request, EVENT_KEY_ATTRIBUTE, None) or task_id
            events.announce_result(self.app, self.step_spec.queue, key, retval)

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        """Write the idempotency record if the result store did not."""
        pending_records.settle(task_id, self.idempotency_store())

    def _handle_failure(self, exc: Exception, correlation_id: str | None) -> None:
        """Carry out :func:`decide_failure`: raise the retry, or dead-letter and re-raise."""
        retries_done = int(self.request.retries or 0)
        decision = decide_failure(exc, retries_done, self.step_spec.retry)
        if isinstance(decision, DeadLetterNow):
            self._dead_letter_and_raise(exc, decision.reason, correlation_id)
        headers = message_headers.carried(self.request.headers)
        trace.retried(self, exc, decision.countdown, decision.busy, correlation_id)
        if not decision.busy:
            logger.warning("attempt %d failed (%s: %s); retrying in %.1fs",
                           retries_done + 1, type(exc).__name__, exc, decision.countdown)
            headers.setdefault(FIRST_FAILURE_HEADER, dead_letter.now_iso())
        raise self.retry(exc=exc, countdown=decision.countdown, max_retries=None,
                         headers=headers, **self._telemetry_reprs())

    def _telemetry_reprs(self) -> dict[str, str]:
        """The payload-free argsrepr/kwargsrepr the pipeline gave this message, for the
        messages it becomes (a retry, a dead letter): Celery would format the payload."""
        reprs = {name: getattr(self.request, name, None) for name in ("argsrepr", "kwargsrepr")}
        return {name: value for name, value in reprs.items() if isinstance(value, str)}

    def _dead_letter_and_raise(
        self, exc: Exception, reason: str, correlation_id: str | None
    ) -> NoReturn:
        """Publish this message to its DLQ with the failure details, then fail the task."""
        request = self.request
        headers = message_headers.carried(request.headers)
        details = dead_letter.failure_details(
            reason=reason,
            queue=self.step_spec.queue,
            task_name=self.name,
            task_id=request.id,
            correlation_id=correlation_id or correlation_id_from_request(request),
            attempts=int(request.retries or 0) + 1,
            exc=exc,
            first_failure_at=headers.get(FIRST_FAILURE_HEADER),
        )
        headers[dead_letter.DEAD_LETTER_HEADER] = details
        try:
            self._publish_dead_letter(headers)
        except Exception as publish_error:
            logger.error("could not publish the dead letter (%s); rejecting to the broker DLX",
                         publish_error)
            raise Reject(f"{reason}: {type(exc).__name__}: {exc}; the dead-letter publish "
                         f"failed ({publish_error}), so the broker dead-letters it",
                         requeue=False) from exc
        logger.error("dead-lettered to %s (%s): %s: %s", dlq_name(self.step_spec.queue),
                     reason, type(exc).__name__, exc)
        events.announce_dead_letter(self.app, details)
        trace.dead_lettered(self, exc, details)
        raise mark_dead_lettered(exc)

    def _publish_dead_letter(self, headers: dict[str, Any]) -> None:
        """This message to its DLQ with ``headers`` (:mod:`orchestrator.failures.dead_letter`)."""
        dead_letter.publish_task_dead_letter(self, headers, self._telemetry_reprs())


def step_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(entrada, options)`` from a step message's arguments, or :class:`InvalidArguments`.

    A step is called as ``step(entrada)`` or ``step(entrada, options)``, either by name; a
    chain link gets ``entrada`` (the previous result) prepended to its ``options=`` keyword.
    """
    names = ("entrada", "options")
    unexpected = sorted(set(kwargs) - set(names))
    if unexpected:
        raise InvalidArguments(f"unexpected keyword argument(s): {', '.join(unexpected)}")
    if len(args) > len(names):
        raise InvalidArguments(f"a step takes at most 2 arguments (entrada, options), "
                               f"got {len(args)}")
    given = dict(zip(names, args, strict=False))
    for name in kwargs:
        if name in given:
            raise InvalidArguments(f"argument {name!r} given twice")
    given.update(kwargs)
    if "entrada" not in given:
        raise InvalidArguments("missing the step's input (entrada): the envelope")
    options = given.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidArguments(f"options must be an object, not {type(options).__name__}")
    return given["entrada"], options


def parse_inputs(entrada: Any, spec: StepSpec) -> tuple[Envelope, ...]:
    """One envelope, or a list of them (a chord's results); all of one correlation id."""
    raw_items = entrada if isinstance(entrada, list) else [entrada]
    if not raw_items:
        raise EnvelopeError("envelope: empty list of inputs")
    inputs = tuple(Envelope.parse(item) for item in raw_items)
    for envelope in inputs:
        if envelope.tipo_evento not in spec.accepts:
            accepted = ", ".join(sorted(e.value for e in spec.accepts))
            raise EnvelopeError(
                f"tipo_evento: {spec.task_name} accepts {accepted}, "
                f"got {envelope.tipo_evento.value}"
            )
    correlation_ids = {envelope.correlation_id for envelope in inputs}
    if len(correlation_ids) > 1:
        raise EnvelopeError("correlation_id: inputs of one step belong to different requests")
    return inputs


def merged_payload(inputs: tuple[Envelope, ...]) -> dict[str, Any]:
    """The payload a step function sees: the envelope's, or ``{"resultados": [...]}``."""
    if len(inputs) == 1:
        return dict(inputs[0].payload)
    return {"resultados": [envelope.to_dict() for envelope in inputs]}


logging.getLogger("orchestrator").addHandler(logging.NullHandler())
