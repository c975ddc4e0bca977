"""Test fallback chain functionality"""

import pytest
from unittest.mock import Mock

from providers.fallback_manager import FallbackChain
from providers.error_handling import ProviderError, ErrorCategory


def test_fallback_chain_success_first():
    """Test successful call on first provider"""
    provider1 = Mock()
    provider1.execute.return_value = "response"

    chain = FallbackChain([('provider1', provider1)])
    result = chain.execute('model', 'prompt')

    assert result == "response"
    provider1.execute.assert_called_once()


def test_fallback_chain_fallthrough():
    """Test fallback to second provider on first failure"""
    provider1 = Mock()
    provider1.execute.side_effect = Exception("Failed")

    provider2 = Mock()
    provider2.execute.return_value = "response"

    chain = FallbackChain([
        ('provider1', provider1),
        ('provider2', provider2)
    ])

    result = chain.execute('model', 'prompt')

    assert result == "response"
    provider2.execute.assert_called_once()


def test_fallback_chain_all_fail():
    """Test error when all providers fail"""
    provider1 = Mock()
    provider1.execute.side_effect = Exception("Failed 1")

    provider2 = Mock()
    provider2.execute.side_effect = Exception("Failed 2")

    chain = FallbackChain([
        ('provider1', provider1),
        ('provider2', provider2)
    ])

    with pytest.raises(RuntimeError):
        chain.execute('model', 'prompt')


def test_health_tracking():
    """Test provider health status tracking"""
    provider1 = Mock()
    provider1.execute.side_effect = Exception("Failed")

    chain = FallbackChain([('provider1', provider1)])

    # Fail multiple times
    try:
        chain.execute('model', 'prompt')
    except RuntimeError:
        pass

    status = chain.get_status()
    assert status['provider1']['health'] == 'degraded'
