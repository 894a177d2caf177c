"""guard.daemon"""
