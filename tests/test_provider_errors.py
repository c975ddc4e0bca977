"""Test error handling framework"""

import pytest
from unittest.mock import Mock, patch
import requests

from providers.error_handling import (
    ErrorClassifier,
    ProviderError,
    ErrorCategory
)


def test_auth_error_classification():
    """Test 401 classified as AUTH_ERROR"""
    response = Mock()
    response.status_code = 401

    error = ErrorClassifier.classify_http_error(response, "test")

    assert error.category == ErrorCategory.AUTH_ERROR
    assert error.retryable is False
    assert error.status_code == 401


def test_rate_limit_detection():
    """Test 429 with Retry-After header"""
    response = Mock()
    response.status_code = 429
    response.headers = {'Retry-After': '120'}

    error = ErrorClassifier.classify_http_error(response, "test")

    assert error.category == ErrorCategory.RATE_LIMIT
    assert error.retryable is True
    assert error.retry_after == 120


def test_server_error_retryable():
    """Test 5xx errors are retryable"""
    response = Mock()
    response.status_code = 503

    error = ErrorClassifier.classify_http_error(response, "test")

    assert error.category == ErrorCategory.SERVER_ERROR
    assert error.retryable is True


def test_timeout_error():
    """Test timeout detection"""
    exc = requests.Timeout()

    error = ErrorClassifier.classify_request_error(exc, "test")

    assert error.category == ErrorCategory.NETWORK_ERROR
    assert error.retryable is True


def test_connection_error():
    """Test connection error detection"""
    exc = requests.ConnectionError()

    error = ErrorClassifier.classify_request_error(exc, "test")

    assert error.category == ErrorCategory.NETWORK_ERROR
    assert error.retryable is True
