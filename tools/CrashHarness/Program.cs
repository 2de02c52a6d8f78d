using System.Globalization;
using QubesFirewall.CrashHarness;

// Performs one kind of engine write on an offline root, so a test can kill it (SIGKILL) at any moment:
//   CrashHarness <kind> <root> prepare                 set the root up for the kind (writes version 0)
//   CrashHarness <kind> <root> once <version>          make the target hold that version, then exit
//   CrashHarness <kind> <root> loop <first version>    versions first, first+1, ... until killed
// kinds: firewall-xml, qubes-xml-feature, qubesdb, managed-block. Each write is announced on standard
// output as "begin N" before it starts and "done N" once it returned, so the test knows which versions
// the file may hold after the kill: from the last done to the last begun.
if (args.Length < 3)
{
    Console.Error.WriteLine("usage: CrashHarness <firewall-xml|qubes-xml-feature|qubesdb|managed-block> <root> prepare|once <version>|loop <first version>");
    return 2;
}
var kind = CrashWrites.ParseKind(args[0]);
var root = args[1];
var stdout = Console.Out;
switch (args[2])
{
    case "prepare":
        CrashWrites.Prepare(kind, root);
        return 0;
    case "once" when args.Length == 4:
    {
        var version = long.Parse(args[3], CultureInfo.InvariantCulture);
        stdout.WriteLine("begin " + version.ToString(CultureInfo.InvariantCulture));
        CrashWrites.Write(kind, root, version);
        stdout.WriteLine("done " + version.ToString(CultureInfo.InvariantCulture));
        return 0;
    }
    case "loop" when args.Length == 4:
    {
        for (var version = long.Parse(args[3], CultureInfo.InvariantCulture); ; version++)
        {
            stdout.WriteLine("begin " + version.ToString(CultureInfo.InvariantCulture));
            CrashWrites.Write(kind, root, version);
            stdout.WriteLine("done " + version.ToString(CultureInfo.InvariantCulture));
        }
    }
    default:
        Console.Error.WriteLine($"unknown mode '{args[2]}'");
        return 2;
}
