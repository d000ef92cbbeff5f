"""ingress/direct"""
