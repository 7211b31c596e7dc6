//! A small classic-BPF assembler for seccomp filters: forward labels, conditional jumps
//! that only ever skip one instruction (so no offset can overflow its 8 bits), and long
//! jumps (`ja`, 32 bits) for everything else.

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Instruction classes and fields (linux/filter.h, linux/bpf_common.h).
/// BPF_LD | BPF_W | BPF_ABS (the first two are 0).
pub const LD_W_ABS: u16 = 0x20;
pub const ALU_AND_K: u16 = 0x04 | 0x50; // BPF_ALU | BPF_AND | BPF_K
pub const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
pub const JMP_JEQ_K: u16 = 0x05 | 0x10;
pub const JMP_JGT_K: u16 = 0x05 | 0x20;
pub const JMP_JGE_K: u16 = 0x05 | 0x30;
pub const RET_K: u16 = 0x06;

// Return values (linux/seccomp.h).
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

/// Offsets into `struct seccomp_data`.
pub const OFF_NR: u32 = 0;
pub const OFF_ARCH: u32 = 4;
/// Offset of the low 32 bits of argument `i` (little-endian hosts only: x86_64, aarch64).
pub const fn off_arg_lo(i: u8) -> u32 {
    16 + 8 * i as u32
}
pub const fn off_arg_hi(i: u8) -> u32 {
    off_arg_lo(i) + 4
}

/// Label is a place in the program jumps can go to (forward only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Asm collects instructions and resolves labels when finished.
#[derive(Debug, Default)]
pub struct Asm {
    code: Vec<SockFilter>,
    /// Where each label is bound (an instruction index).
    labels: Vec<Option<usize>>,
    /// Jumps waiting for their label: `ja` (long) or a conditional's `jt` (short).
    fixups: Vec<(usize, Label, bool)>,
}

impl Asm {
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Puts `l` at the next instruction.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.code.len());
    }

    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) {
        self.code.push(SockFilter { code, jt, jf, k });
    }

    pub fn load(&mut self, offset: u32) {
        self.push(LD_W_ABS, 0, 0, offset);
    }

    pub fn and(&mut self, mask: u32) {
        self.push(ALU_AND_K, 0, 0, mask);
    }

    pub fn ret(&mut self, value: u32) {
        self.push(RET_K, 0, 0, value);
    }

    pub fn jump(&mut self, to: Label) {
        self.fixups.push((self.code.len(), to, false));
        self.push(JMP_JA, 0, 0, 0);
    }

    /// Goes to `to`, which must come within 255 instructions, when `A <cond> k` holds.
    pub fn jump_near_if(&mut self, cond: u16, k: u32, to: Label) {
        self.fixups.push((self.code.len(), to, true));
        self.push(cond, 0, 0, k);
    }

    /// Goes to `to` when `A <cond> k` holds (`cond` is a `JMP_J*_K` code).
    pub fn jump_if(&mut self, cond: u16, k: u32, to: Label) {
        self.push(cond, 0, 1, k);
        self.jump(to);
    }

    /// Goes to `to` when `A <cond> k` does not hold.
    pub fn jump_unless(&mut self, cond: u16, k: u32, to: Label) {
        self.push(cond, 1, 0, k);
        self.jump(to);
    }

    /// The finished program; None if a label was used but never bound, bound behind
    /// its jump, or too far for a near jump (all bugs of the caller).
    pub fn finish(mut self) -> Option<Vec<SockFilter>> {
        for (at, l, near) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l.0]?;
            let k = target.checked_sub(at + 1)?;
            if near {
                self.code[at].jt = u8::try_from(k).ok()?;
            } else {
                self.code[at].k = u32::try_from(k).ok()?;
            }
        }
        Some(self.code)
    }
}

/// The input a filter decides on (`struct seccomp_data` without `instruction_pointer`).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub struct Data {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

/// Runs `prog` on `d` as the kernel would; for tests.
#[cfg(test)]
pub fn run(prog: &[SockFilter], d: &Data) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            OFF_NR => d.nr,
            OFF_ARCH => d.arch,
            o if o >= 16 && (o - 16) % 4 == 0 && o < 16 + 48 => {
                let i = ((o - 16) / 8) as usize;
                if (o - 16) % 8 == 0 {
                    d.args[i] as u32
                } else {
                    (d.args[i] >> 32) as u32
                }
            }
            o => panic!("load from bad offset {o}"),
        }
    };
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => a = word(i.k),
            ALU_AND_K => a &= i.k,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K => {
                let t = match i.code {
                    JMP_JEQ_K => a == i.k,
                    JMP_JGT_K => a > i.k,
                    _ => a >= i.k,
                };
                pc += if t { i.jt } else { i.jf } as usize;
            }
            RET_K => return i.k,
            c => panic!("unknown instruction {c:#x}"),
        }
    }
}
