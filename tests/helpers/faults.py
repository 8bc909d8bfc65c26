"""Kill a piece of work at its k-th file operation, as SIGKILL would: what the fault tests of galleries, checkpoints
and atomic writes share."""

import os


def killed_at(step: int, work, os_functions: tuple[str, ...], others: tuple[tuple[object, str], ...] = ()) -> bool:
    """
    Runs `work()` in a forked child in which the `os` functions named and the (owner, attribute) `others` count their
    calls, the `step`-th call ending the child at once (os._exit: no cleanup, no finally blocks). Returns whether the
    child died there (True) or finished `work` (False); fails if `work` itself raised.
    """
    pid = os.fork()
    if pid == 0:
        try:
            calls = [0]

            def dying(real):
                def operation(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == step:
                        os._exit(77)
                    return real(*args, **kwargs)

                return operation

            for owner, name in [*((os, name) for name in os_functions), *others]:
                setattr(owner, name, dying(getattr(owner, name)))
            work()
            os._exit(0)
        except BaseException:  # noqa: BLE001 (any failure of the work is reported as exit 1)
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 77), f"the work failed on its own (exit {code})"
    return code == 77
