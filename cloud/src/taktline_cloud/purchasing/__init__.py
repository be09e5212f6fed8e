"""Purchasing: suppliers, requisitions from MRP, purchase orders, confirmations, receipts."""
