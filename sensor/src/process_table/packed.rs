//! A program's paths and arguments packed into one allocation.
//!
//! An exited process is kept for seconds, and a busy host has thousands: when it is finally
//! forgotten its memory has long left the cache, and freeing costs a cache miss per block
//! freed. Packed, its program is one block instead of one per path and argument, and smaller.
use super::image::Program;

/// Bytes of each piece's end offset in the header.
const OFFSET_BYTES: usize = std::mem::size_of::<u32>();
/// Pieces before the arguments: the binary, the invoked path and the working directory.
const FIXED_PIECES: usize = 3;

/// The binary, invoked path, working directory and arguments, exactly as the kernel gave them.
///
/// Layout of `bytes`: the number of pieces, then each piece's end (offsets into the data that
/// follows), all as native-endian `u32`; then the pieces back to back. Empty when every piece
/// is empty and there are no arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct PackedProgram {
    bytes: Box<[u8]>,
    args_truncated: bool,
    path_truncated: bool,
}

impl PackedProgram {
    /// Packs the pieces: a program's paths and arguments, from an exec record or from /proc,
    /// are bounded by the kernel far below 4 GiB.
    fn pack<'a>(
        fixed: [&'a [u8]; FIXED_PIECES],
        args: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
        args_truncated: bool,
        path_truncated: bool,
    ) -> Self {
        let pieces = || fixed.into_iter().chain(args.clone());
        let count = FIXED_PIECES + args.len();
        let data_len: usize = pieces().map(<[u8]>::len).sum();
        let mut bytes = Vec::new();
        if data_len > 0 || count > FIXED_PIECES {
            bytes.reserve_exact((1 + count) * OFFSET_BYTES + data_len);
            bytes.extend_from_slice(&(count as u32).to_ne_bytes());
            let mut end = 0u32;
            for piece in pieces() {
                end += piece.len() as u32;
                bytes.extend_from_slice(&end.to_ne_bytes());
            }
            pieces().for_each(|piece| bytes.extend_from_slice(piece));
        }
        Self {
            bytes: bytes.into_boxed_slice(),
            args_truncated,
            path_truncated,
        }
    }

    /// The program, packed.
    pub(super) fn of_program(program: &Program) -> Self {
        Self::pack(
            [&program.binary, &program.invoked, &program.cwd],
            program.args.iter().map(Vec::as_slice),
            program.args_truncated,
            program.path_truncated,
        )
    }

    fn offset(&self, index: usize) -> usize {
        let at = index * OFFSET_BYTES;
        let mut word = [0; OFFSET_BYTES];
        word.copy_from_slice(&self.bytes[at..at + OFFSET_BYTES]);
        u32::from_ne_bytes(word) as usize
    }

    fn count(&self) -> usize {
        if self.bytes.is_empty() {
            0
        } else {
            self.offset(0)
        }
    }

    /// Piece `index` (0: binary, 1: invoked path, 2: working directory, then the arguments).
    fn piece(&self, index: usize) -> &[u8] {
        let count = self.count();
        if index >= count {
            return &[];
        }
        let data = (1 + count) * OFFSET_BYTES;
        let start = if index == 0 { 0 } else { self.offset(index) };
        &self.bytes[data + start..data + self.offset(index + 1)]
    }

    pub(super) fn binary(&self) -> &[u8] {
        self.piece(0)
    }

    /// The program, unpacked.
    pub(super) fn unpack(&self) -> Program {
        let args = (FIXED_PIECES..self.count().max(FIXED_PIECES))
            .map(|index| self.piece(index).to_vec())
            .collect();
        Program {
            binary: self.piece(0).to_vec(),
            invoked: self.piece(1).to_vec(),
            args,
            args_truncated: self.args_truncated,
            cwd: self.piece(2).to_vec(),
            path_truncated: self.path_truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(args: &[&[u8]], binary: &[u8]) -> Program {
        Program {
            binary: binary.to_vec(),
            invoked: b"/usr/bin/odd".to_vec(),
            args: args.iter().map(|arg| arg.to_vec()).collect(),
            args_truncated: true,
            cwd: b"/home/a b".to_vec(),
            path_truncated: false,
        }
    }

    #[test]
    fn a_packed_program_unpacks_to_the_same_bytes() {
        for program in [
            program(&[b"odd", b"", b"b\xfe", b""], b"/bin/odd\xff"),
            program(&[], b"/bin/none"),
            program(&[b""], b""),
            Program::default(),
        ] {
            let packed = PackedProgram::of_program(&program);
            assert_eq!(packed.unpack(), program);
            assert_eq!(packed.binary(), program.binary.as_slice());
        }
        assert!(
            PackedProgram::of_program(&Program::default())
                .bytes
                .is_empty(),
            "nothing to hold, nothing allocated"
        );
    }
}
