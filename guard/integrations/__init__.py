"""guard.integrations"""
