"""guard.net"""
