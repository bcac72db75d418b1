"""TLS and SASL for every Kafka client, built from :class:`~streams.config.settings.KafkaClientSettings`.

One place turns the ``PARTNERPULSE_KAFKA_*`` settings into what each client library takes:
Faust's ``broker_credentials``, and the keyword arguments kafka-python (simulate, replay, topic
creation) and aiokafka (the worker's changelog readers) share. A client opened beside Faust's
own, where only the app is at hand (the journal store's bulk loader), takes the app's
credentials through :func:`app_client_kwargs`. Nothing here logs, and the password only leaves
its ``SecretStr`` inside the objects handed to the clients.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from streams.config.settings import SASL_PROTOCOLS, TLS_PROTOCOLS, KafkaClientSettings

if TYPE_CHECKING:
    from faust.types import AppT
    from faust.types.auth import CredentialsT


def ssl_context(settings: KafkaClientSettings) -> ssl.SSLContext | None:
    """A client TLS context for the SSL and SASL_SSL protocols, else None.

    Verification is always on (CERT_REQUIRED); the CA file replaces the system CAs when given.
    """
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None:
        key_password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            key_password.get_secret_value() if key_password is not None else None,
        )
    return context


def client_kwargs(settings: KafkaClientSettings) -> dict[str, Any]:
    """Security keyword arguments for kafka-python and aiokafka clients (same names in both)."""
    protocol = settings.kafka_security_protocol
    out: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        out["ssl_context"] = context
    if protocol in SASL_PROTOCOLS:
        assert settings.kafka_sasl_password is not None  # checked by the settings
        out |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return out


def faust_credentials(settings: KafkaClientSettings) -> CredentialsT | None:
    """Faust's ``broker_credentials``: SASLCredentials (with TLS for SASL_SSL), SSLCredentials
    for SSL, None for PLAINTEXT."""
    import faust

    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        assert settings.kafka_sasl_password is not None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,  # Faust picks SASL_SSL when a context is given
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def app_client_kwargs(app: AppT) -> dict[str, Any]:
    """Security keyword arguments for an aiokafka client a worker opens beside Faust's own.

    Exactly what Faust's aiokafka driver gives its own consumer and producer: the app's
    ``broker_credentials`` (:func:`faust_credentials`) in aiokafka's terms. For code that holds
    the app but not the settings, so it cannot drift from the worker's main connection.
    """
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return dict(credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context))
