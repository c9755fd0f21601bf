"""The serving errors. (What serving knows of a user at request time, ``UserState``, is
the online store's read type: ``stores.online``.)"""

from __future__ import annotations

from movierec.errors import MovierecError


class ServingError(MovierecError):
    """Base of every error the serving component raises; the HTTP layer maps each kind to
    an answer (400 for ``BadRequest``, a degraded 200 for the others on /recommend)."""


class BadRequest(ServingError):
    """The request itself is wrong (non-numeric or absurd user id, bad admin payload);
    the message is the short plain-text reason sent back with status 400."""


class FeaturesUnavailable(ServingError):
    """The online feature store did not answer in time (timeout, refused, breaker open)."""


class ModelUnavailable(ServingError):
    """No model can answer: none loaded yet, or a model failed validation or scoring."""
