"""Route placeholder: replaced by the module that implements this protocol."""

from fastapi import APIRouter

router = APIRouter()
