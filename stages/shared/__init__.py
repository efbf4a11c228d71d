"""Helpers that several stage modules share (not stages): prompted params and prior loading, the prompt check
against a prior folder, the outputs of a field-optimising stage."""
