"""Broadcasts: news sent to a segment of contacts (a tag, a language, a postcode prefix, a
channel; several filters combine with AND).

Who gets it. A person with the "news" consent (the latest ``consents`` row for "news" says
yes: the ``consent`` column of an import or their own yes), reached on the address they last
wrote from (else their first address). Left out, each with one reason, in this order: no
address, STOP, no consent, a provider-blocked address, a landline (SMS), an address on the
suppression list (``bot.domain.rights``), the weekly cap (``RELAIS_MAX_BROADCASTS_PER_WEEK``
broadcasts in 7 days).

How it goes. Recipients are chosen when the broadcast is sent, in batches of contacts (the
``cursor`` is the last contact id done), each batch written to the outbox as bulk rows
(priority 1, ``broadcast_id``) in one statement, under a lock on the broadcast row: a CLI
``send`` and a scheduler job can work on the same broadcast without writing a row twice,
and a send cut by a crash resumes where it stopped. The outbox sends at each channel's rate.
Every text ends with how to stop ("STOP pour ne plus recevoir").

Quiet hours. A recipient in quiet hours (their own time zone) gets a row due at the end of
them. While a broadcast is sending, a job (``broadcast.tick``, every minute) moves the rows
of people whose quiet hours are about to begin to the end of those quiet hours: a long send
pauses for them and resumes in the morning. Once nothing is left to send the broadcast is
``done``; 48 hours later (the replies window) its final figures are recorded as an anonymous
event (``broadcast.settled``) that reports count, whatever is erased afterwards.


The parts: ``audience`` (who and what), ``sending``, ``status``; ``base`` holds what they
share. This package gives their public names."""

from bot.domain.broadcasts.audience import (
    Candidate,
    Preview,
    Segment,
    make_segment,
    make_texts,
    preview,
    recipient_timezone,
    render,
    select_batch,
    sms_segments,
    text_language,
)
from bot.domain.broadcasts.base import (
    ACTIVE,
    KIND,
    OUTCOMES,
    PURPOSE,
    SEND_JOB,
    SETTLE_JOB,
    TICK_JOB,
    BroadcastError,
    NotFound,
)
from bot.domain.broadcasts.sending import (
    JOBS,
    cancel,
    create,
    enqueue_all,
    enqueue_batch,
    get,
    pause_quiet,
    schedule_tick,
    settle,
    tick,
)
from bot.domain.broadcasts.status import (
    describe,
    listing,
    replied,
    status_counts,
)
from bot.storage.models import Broadcast

__all__ = [
    "ACTIVE",
    "Broadcast",
    "BroadcastError",
    "Candidate",
    "JOBS",
    "KIND",
    "NotFound",
    "OUTCOMES",
    "PURPOSE",
    "Preview",
    "SEND_JOB",
    "SETTLE_JOB",
    "Segment",
    "TICK_JOB",
    "cancel",
    "create",
    "describe",
    "enqueue_all",
    "enqueue_batch",
    "get",
    "listing",
    "make_segment",
    "make_texts",
    "pause_quiet",
    "preview",
    "recipient_timezone",
    "render",
    "replied",
    "schedule_tick",
    "select_batch",
    "settle",
    "sms_segments",
    "status_counts",
    "text_language",
    "tick",
]
