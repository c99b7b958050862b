"""What a transfer is asked for (``TransferOptions``): how the position table is stretched to the new length,
BigBird's block-sparse shape, and global registers; and the check that they can run at that length."""

from __future__ import annotations

from dataclasses import dataclass

from ctxext.errors import InvalidArgument, UnsupportedArchitecture
from ctxext.positions import Grid, Method
from ctxext.transfer.tables import TARGETS


@dataclass(frozen=True)
class TransferOptions:
    """The BigBird asked for (the CLI builds it from its options): how the position table is stretched, its
    block size and random blocks, and whether the tokenizer fills its global blocks with reserved tokens."""

    method: Method = Method.tile
    """How the position rows past the source's length are filled (``ctxext.positions``)."""
    grid: Grid = Grid.pinned
    block_size: int = 64
    num_random_blocks: int = 3
    """BigBird's random blocks per query block."""
    global_registers: bool = False
    """The tokenizer fills BigBird's global blocks with reserved tokens (``reserve_global_blocks``)."""

    def check(self, target: str, target_length: int) -> None:
        """Refuse, before any work, a target or a BigBird shape that cannot run block-sparse at ``target_length``."""
        if target not in TARGETS:
            raise UnsupportedArchitecture(f"transfer target {target!r} is not supported; targets: {', '.join(TARGETS)}")
        block_size, num_random_blocks = self.block_size, self.num_random_blocks
        if block_size < 1 or num_random_blocks < 0:
            raise InvalidArgument("--block-size must be at least 1 and --random-blocks at least 0")
        if target_length % block_size:
            raise InvalidArgument(
                f"--len {target_length} is not a multiple of --block-size {block_size}: BigBird pads "
                "inputs to whole blocks, so the last positions would be out of the table"
            )
        full_up_to = full_attention_up_to(block_size, num_random_blocks)
        if target_length <= full_up_to:
            raise InvalidArgument(
                f"--len {target_length} is not above (5 + 2 * {num_random_blocks}) * {block_size} = "
                f"{full_up_to}: "
                "BigBird would always fall back to full attention; use a smaller --block-size or --random-blocks"
            )


def full_attention_up_to(block_size: int = 64, num_random_blocks: int = 3) -> int:
    """The longest input BigBird runs with full attention: 2 global, 3 sliding and 2 x the random blocks."""
    return (5 + 2 * num_random_blocks) * block_size
