"""The base class of every config section and the field helper."""

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]


def F(description: str) -> Any:
  """A required field with its one-line description. Defaults live only in configs/base.yml."""
  return Field(description=description)


class Section(BaseModel):
  """A frozen group of flat config keys; unknown keys are refused."""

  model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False, protected_namespaces=())
  section_name: ClassVar[str] = ""
