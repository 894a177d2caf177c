"""Snippets the escape tests run inside the sandbox."""

# Python that defines call(nr, *args): a raw syscall, printing "OK <ret>" or "ERR <errno name>".
SYSCALL = (
    "import ctypes, errno, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.syscall.restype = ctypes.c_long\n"
    "def call(*args):\n"
    "    r = libc.syscall(*[ctypes.c_long(a) if isinstance(a, int) else a for a in args])\n"
    "    print('OK', r) if r >= 0 else print('ERR', errno.errorcode[ctypes.get_errno()])\n"
    "    sys.stdout.flush()\n"
    "    return r\n"
)
