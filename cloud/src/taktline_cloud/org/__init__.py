"""Organisation: the ISA-95 equipment hierarchy (group → company → plant → area → line → machine).
"""
