"""Sending buyer requests: the transport contract and the lean HTTP/1.1 transport.
"""
