"""guard.audit"""
