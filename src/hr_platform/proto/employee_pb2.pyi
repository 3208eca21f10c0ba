from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message

DESCRIPTOR: _descriptor.FileDescriptor

class EmployeeMessage(_message.Message):
    __slots__ = ("first_name", "guid", "last_name")
    GUID_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    guid: str
    first_name: str
    last_name: str
    def __init__(
        self,
        guid: str | None = ...,
        first_name: str | None = ...,
        last_name: str | None = ...,
    ) -> None: ...
