# How ptdump_arm64_known.txt was made: a renderer of note_page()/dump_prot() output
# (arch/arm64/mm/ptdump.c, 6.12) over a hand-picked list of entries. Re-run with python3.
# Render an arm64 ptdump exactly the way arch/arm64/mm/ptdump.c note_page()/dump_prot() prints.
K=1<<10; M=1<<20; G=1<<30
def flags(valid=True, user=False, ro=False, nx=True, shd=True, af=True, ng=False, con=False, table=True, uxn=True, gp=False, mt="MEM/NORMAL"):
    s = [" " if valid else "F", "USR" if user else "   ", "ro" if ro else "RW", "NX" if nx else "x ",
         "SHD" if shd else "   ", "AF" if af else "  ", "NG" if ng else "  ", "CON" if con else "   ",
         "   " if table else "BLK", "UXN" if uxn else "   ", "GP" if gp else "  ", mt]
    return "".join(" " + x for x in s)
def size(d):
    units="KMGTPE"; d >>= 10; u=0
    while not (d & 1023) and u < 5:
        d >>= 10; u += 1
    return f"{d:9d}{units[u]}"
out=[]
def hdr(n): out.append(f"---[ {n} ]---")
def ent(start, length, level, f=None):
    assert length > 0, (hex(start), length)
    end=(start+length) % (1<<64)
    out.append(f"0x{start:016x}-0x{end:016x}   {size(length)} {level}" + (f if f else ""))
    return start+length
def to(a, b, level): return ent(a, b - a, level)
a=0xffff000000000000
hdr("Linear Mapping start")
a=ent(a, 1*G, "PUD")                                  # hole below RAM
a=ent(a, 2*M, "PMD", flags(table=False))              # 2M block
a=ent(a, 32*M, "PMD", flags(con=True, table=False))   # contiguous PMD block (16 x 2M)
a=ent(a, 64*K, "PTE", flags(con=True))                # contpte
a=ent(a, 12*K, "PTE", flags())                        # plain ptes
a=ent(a, 4*K, "PTE", flags(valid=False))              # prot bits but not valid: F
a=ent(a, 2*M - 80*K, "PTE", flags())
a=ent(a, 476*M, "PMD", flags(table=False))
a=to(a, 0xffff000080000000, "PUD")
a=to(a, 0xffff800000000000, "PGD")
hdr("Linear Mapping end")
hdr("Modules start")
a=ent(a, 2*G, "PUD")
hdr("Modules end")
hdr("vmalloc() area")
a=ent(a, 16*K, "PTE", flags())                       # pte
a=ent(a, 4*K, "PTE")                                 # guard page (empty)
a=ent(a, 128*K, "PTE", flags(con=True))              # 2 contpte blocks
a=ent(a, 4*K, "PTE")
a=ent(a, 8*K, "PTE", flags(ro=True, nx=False))       # ro x: kernel text style
a=ent(a, 2*M - 160*K, "PTE")
a=ent(a, 4*M, "PMD", flags(table=False))             # 2 blocks
a=ent(a, 4*K, "PTE", flags(ng=True))                 # one nG pte
a=ent(a, 2*M - 4*K, "PTE")
a=to(a, 0xffff8000c0000000, "PMD")
a=to(a, 0xffff808000000000, "PUD")
a=to(a, 0xfffffd8000000000, "PGD")
a=to(a, 0xfffffdffbfe00000, "PUD")
hdr("vmalloc() end")
a=to(a, 0xfffffdffc0000000, "PMD")
hdr("vmemmap start")
a=ent(a, 2*M, "PMD", flags(table=False))
a=to(a, 0xfffffe0000000000, "PUD")
a=to(a, 0xffffff8000000000, "PGD")
a=to(a, 0xfffffffffbe00000, "PMD")
hdr("vmemmap end")
a=to(a, 0xfffffffffc000000, "PMD")
hdr("PCI I/O start")
a=ent(a, 16*M, "PMD")
hdr("PCI I/O end")
a=to(a, 0xffffffffff600000, "PMD")
hdr("Fixmap start")
a=to(a, 0xffffffffff7f9000, "PTE")
a=ent(a, 4*K, "PTE", flags(mt="DEVICE/nGnRE"))
a=ent(a, 8*K, "PTE", flags(ro=True))
a=to(a, 0xffffffffff800000, "PTE")
hdr("Fixmap end")
a=to(a, 1<<64, "PMD")
open("ptdump_arm64_known.txt","w").write("\n".join(out)+"\n")
print("\n".join(out))
