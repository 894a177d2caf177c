"""guard.audit: the signed, forward-secure audit trail and the auditor's verifier.

Writers (the daemon) use `AuditWriter` with `decision_event` / `session_event`; auditors use `verify_log`
(or the streaming `LogVerifier` directly), receipts and exports. The on-disk format is specified in
docs/audit-format.md precisely enough to write an independent verifier.
"""

from guard.audit.events import decision_event, session_event
from guard.audit.keys import Keyring, read_pinned_key
from guard.audit.segments import verify_log
from guard.audit.verify import Finding, LogVerifier, Report
from guard.audit.writer import AuditWriter

__all__ = ["AuditWriter", "Finding", "Keyring", "LogVerifier", "Report", "decision_event", "read_pinned_key",
           "session_event", "verify_log"]
