"""Protobuf messages shared with the Ruby HR platform.

``employee_pb2`` is generated from ``employee.proto`` and committed; regenerate it
from ``src/`` with::

    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. hr_platform/proto/employee.proto
    ruff format hr_platform/proto && ruff check --fix hr_platform/proto

(then put ``# ruff: noqa: E501`` back on the first line of ``employee_pb2.py``).
"""

from .employee_pb2 import EmployeeMessage

__all__ = ["EmployeeMessage"]
