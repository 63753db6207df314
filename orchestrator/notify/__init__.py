"""Notifications: a message per transition of a job (failure, recovery, alert, overdue) to
Apprise URLs. model.py is the ``notify:`` block, transitions.py decides, message.py writes,
deliver.py sends, watch.py is the daemon's side. See docs/notifications.md."""
