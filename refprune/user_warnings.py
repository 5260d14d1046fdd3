"""Warnings attributed to the user's own line.

A warning raised deep inside refprune (a pruning request that removed nothing, a store
record that cannot be trusted) is only useful if it names the line that called refprune.
A fixed ``stacklevel`` cannot do that: the same check is reached through call chains of
different depths.  :func:`warn` walks up the stack instead, past every frame of the
package's own files.
"""

import os
import sys
import warnings

#: where the library's own frames come from (a tuple, as ``str.startswith`` takes it)
PACKAGE = (os.path.dirname(os.path.abspath(__file__)) + os.sep,)


def warn(message, category):
    """Issue ``message`` as a ``category`` warning attributed to the first caller outside
    refprune."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
