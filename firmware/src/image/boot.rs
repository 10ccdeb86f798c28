//! Reset vector and mode switches: 16-bit real mode -> 32-bit protected mode
//! -> 64-bit long mode, then `firmware_main(ticket)` on a per-vCPU stack.
//!
//! Every vCPU starts here at once under umbra, so the page tables are
//! written by every vCPU with identical values (idempotent stores, no
//! ordering needed) and each vCPU takes the stack slot of the ticket it
//! draws. Nothing here may raise #VC (no CPUID, no port I/O): under SEV-ES
//! the handler only exists once `firmware_main` installed it. The C-bit
//! comes from the CPUID page. Addresses come from `umbra_firmware::layout`.

use core::arch::global_asm;
use core::sync::atomic::AtomicU32;

/// The next stack slot: every vCPU takes one ticket in 64-bit mode.
static TICKET: AtomicU32 = AtomicU32::new(0);

global_asm!(
    // The architectural reset vector at 0xFFFF_FFF0: CS base 0xFFFF_0000.
    ".section .reset, \"ax\"",
    ".code16",
    ".global reset_vector",
    "reset_vector:",
    "    jmp entry16",
    "    .balign 16, 0xf4",
    //
    // 16-bit entry at 0xFFFF_F000 (also the SEV-ES AP reset EIP).
    ".section .text16, \"ax\"",
    ".code16",
    ".global entry16",
    "entry16:",
    "    cli",
    "    cld",
    // The GDT descriptor's offset within the 64 KiB real-mode segment.
    "    lgdtl %cs:(0xF000 + gdt_desc - entry16)",
    "    movl %cr0, %eax",
    "    orl $1, %eax",
    "    movl %eax, %cr0",
    "    ljmpl $0x08, $entry32",
    //
    ".code32",
    "entry32:",
    "    movw $0x10, %ax",
    "    movw %ax, %ds",
    "    movw %ax, %es",
    "    movw %ax, %ss",
    "    movw %ax, %fs",
    "    movw %ax, %gs",
    // The C-bit: leaf 0x8000_001F EBX[5:0] of the SNP CPUID page (read
    // before paging, when every access is private). %esi holds the bit in
    // the high dword of an entry, or 0: where no CPUID page exists (the
    // plain platform leaves that RAM zero) there is no encryption bit.
    "    xorl %esi, %esi",
    "    movl ${cpuid_page}, %edx",
    "    movl (%edx), %ecx",
    "    cmpl ${cpuid_max}, %ecx",
    "    ja 6f",
    "    addl $16, %edx",
    "5:  jecxz 6f",
    "    cmpl $0x8000001F, (%edx)",
    "    je 7f",
    "    addl $0x30, %edx",
    "    decl %ecx",
    "    jmp 5b",
    "7:  movl 0x1C(%edx), %ecx",
    "    andl $0x3F, %ecx",
    "    cmpl $32, %ecx",
    "    jb 6f",
    "    movl $1, %esi",
    "    shll %cl, %esi",
    "6:",
    // PML4[0] -> PDPT, the other 511 entries zero.
    "    movl ${pml4}, %edi",
    "    movl ${pdpt} + 3, %eax",
    "    movl %eax, (%edi)",
    "    movl %esi, 4(%edi)",
    "    addl $8, %edi",
    "    movl $(511 * 2), %ecx",
    "    xorl %eax, %eax",
    "    rep stosl",
    // PDPT[0..4] -> the four page directories, the rest zero.
    "    movl ${pdpt}, %edi",
    "    movl ${pd} + 3, %eax",
    "    movl $4, %ecx",
    "1:  movl %eax, (%edi)",
    "    movl %esi, 4(%edi)",
    "    addl $0x1000, %eax",
    "    addl $8, %edi",
    "    loop 1b",
    "    movl $(508 * 2), %ecx",
    "    xorl %eax, %eax",
    "    rep stosl",
    // Without a C-bit (a plain guest) the map is 2048 plain 2 MiB pages;
    // this loop runs on every vCPU under an instruction emulator on the CI
    // machines, so the plain path keeps it short.
    "    movl ${pd}, %edi",
    "    movl $0x83, %eax",
    "    movl $2048, %ecx",
    "    testl %esi, %esi",
    "    jnz 2f",
    "10: movl %eax, (%edi)",
    "    movl $0, 4(%edi)",
    "    addl $0x200000, %eax",
    "    addl $8, %edi",
    "    loop 10b",
    "    jmp 11f",
    // 2048 2 MiB pages: an identity map of the first 4 GiB (RAM and ROM),
    // private (C-bit) except the MMIO hole from 3 GiB to the ROM's page.
    "2:  movl %eax, (%edi)",
    "    movl %esi, 4(%edi)",
    "    cmpl $0xC0000000, %eax",
    "    jb 3f",
    "    cmpl $0xFFE00000, %eax",
    "    jae 3f",
    "    movl $0, 4(%edi)",
    "3:  addl $0x200000, %eax",
    "    addl $8, %edi",
    "    loop 2b",
    // The first 4 MiB in 4 KiB pages (two page tables), so that single
    // pages can be shared: the boot-information page is shared from the
    // start, the GHCB and message pages once the firmware converts them.
    "    movl ${pt}, %edi",
    "    movl $3, %eax",
    "    movl $1024, %ecx",
    "8:  movl %eax, (%edi)",
    "    movl %esi, 4(%edi)",
    "    cmpl ${boot_info} + 3, %eax",
    "    jne 9f",
    "    movl $0, 4(%edi)",
    "9:  addl $0x1000, %eax",
    "    addl $8, %edi",
    "    loop 8b",
    "    movl ${pd}, %edi",
    "    movl ${pt} + 3, %eax",
    "    movl %eax, (%edi)",
    "    addl $0x1000, %eax",
    "    movl %eax, 8(%edi)",
    "11: movl ${pml4}, %eax",
    "    movl %eax, %cr3",
    // CR4: PAE. The image is built without SSE (see vmm/build.rs).
    "    movl %cr4, %eax",
    "    orl $0x20, %eax",
    "    movl %eax, %cr4",
    // EFER.LME
    "    movl $0xC0000080, %ecx",
    "    rdmsr",
    "    orl $0x100, %eax",
    "    wrmsr",
    // CR0: PG | MP, clear EM, CD and NW.
    "    movl %cr0, %eax",
    "    andl $0x9FFFFFFB, %eax",
    "    orl $0x80000002, %eax",
    "    movl %eax, %cr0",
    "    ljmpl $0x18, $entry64",
    //
    ".code64",
    "entry64:",
    "    movw $0x10, %ax",
    "    movw %ax, %ds",
    "    movw %ax, %es",
    "    movw %ax, %ss",
    // A stack slot per vCPU from a ticket counter (no CPUID here: under
    // SEV-ES it raises #VC, and no handler exists yet).
    "    movabsq ${ticket}, %rcx",
    "    movl $1, %eax",
    "    lock xaddl %eax, (%rcx)",
    "    movl %eax, %edi",
    "    cmpl ${max_vcpus}, %eax",
    "    jae 4f",
    "    shlq ${stack_shift}, %rax",
    "    movq ${stacks_top}, %rsp",
    "    subq %rax, %rsp",
    "    call firmware_main",
    "4:  cli",
    "    hlt",
    "    jmp 4b",
    //
    // The GDT lives in ROM, so every descriptor has its Accessed bit set
    // already: loading a segment would otherwise make the CPU write that
    // bit back into read-only memory (a refused write; some KVM
    // implementations retry it forever).
    ".balign 8",
    "gdt:",
    "    .quad 0",
    "    .quad 0x00CF9B000000FFFF", // 0x08: 32-bit code
    "    .quad 0x00CF93000000FFFF", // 0x10: data
    "    .quad 0x00AF9B000000FFFF", // 0x18: 64-bit code
    "gdt_end:",
    "gdt_desc:",
    "    .word gdt_end - gdt - 1",
    "    .long gdt",
    pml4 = const umbra_firmware::layout::PAGE_TABLES_GPA,
    pdpt = const umbra_firmware::layout::PAGE_TABLES_GPA + 0x1000,
    pd = const umbra_firmware::layout::PAGE_TABLES_GPA + 0x2000,
    pt = const umbra_firmware::layout::PAGE_TABLE_4K_GPA,
    boot_info = const umbra_firmware::layout::BOOT_INFO_GPA,
    cpuid_page = const umbra_firmware::layout::CPUID_PAGE_GPA,
    cpuid_max = const umbra_snp_abi::CPUID_MAX_ENTRIES,
    ticket = sym TICKET,
    max_vcpus = const umbra_firmware::layout::MAX_VCPUS,
    stack_shift = const umbra_firmware::layout::STACK_SIZE.trailing_zeros(),
    stacks_top = const umbra_firmware::layout::STACKS_TOP,
    options(att_syntax)
);
