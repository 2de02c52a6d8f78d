using System.Globalization;
using System.Text;
using CsCheck;

namespace QubesFirewall.Engine.Tests.Fuzz;

/// <summary>
/// Runs a property over generated inputs, deterministically: iteration i of a property draws its input
/// from CsCheck's PCG with a stream named after the property and seed <see cref="Seed"/> + i, so a CI
/// run always tries the same inputs and a failure names the iteration and CsCheck seed that reproduce
/// it. Counts come from the test (bounded for CI) unless $env:QUBESFW_FUZZ_ITERATIONS sets them
/// (the longer runs of docs/testing.md); $env:QUBESFW_FUZZ_SEED changes the seed.
/// </summary>
public static class Fuzz
{
    public const ulong DefaultSeed = 20_260_611;

    public static ulong Seed { get; } =
        ulong.TryParse(Environment.GetEnvironmentVariable("QUBESFW_FUZZ_SEED"), NumberStyles.None, CultureInfo.InvariantCulture, out var s) ? s : DefaultSeed;

    /// <summary>The iteration count: the CI default, or $env:QUBESFW_FUZZ_ITERATIONS when set.</summary>
    public static int Iterations(int ciDefault) =>
        int.TryParse(Environment.GetEnvironmentVariable("QUBESFW_FUZZ_ITERATIONS"), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : ciDefault;

    private static long _executions;

    /// <summary>Executions of every property so far in this test process.</summary>
    public static long Executions => Interlocked.Read(ref _executions);

    /// <summary>Checks <paramref name="property"/> on <paramref name="iterations"/> inputs; returns how many ran.</summary>
    public static int Check<T>(string property, Gen<T> gen, int iterations, Action<T> check, Action<string>? log = null, Func<T, string>? print = null)
    {
        var n = Iterations(iterations);
        var stream = StableHash(property);
        print ??= v => Show(v?.ToString());
        for (var i = 0; i < n; i++)
        {
            var pcg = new PCG(stream, Seed + (ulong)i);
            var seedText = pcg.ToString();
            var value = gen.Generate(pcg, null, out _);
            try
            {
                check(value);
            }
            catch (Exception ex)
            {
                throw new Xunit.Sdk.XunitException(
                    $"{property}: iteration {i} (seed {Seed}, CsCheck seed {seedText}) failed for input {print(value)}:{Environment.NewLine}{ex}");
            }
        }
        Interlocked.Add(ref _executions, n);
        log?.Invoke($"{property}: {n} executions (seed {Seed})");
        return n;
    }

    /// <summary>
    /// A fresh folder for a property's files: in /dev/shm when there is one (memory: the thousands of
    /// fsyncs of the atomic writes cost nothing there), else in the temporary folder.
    /// </summary>
    public static string NewDirectory(string prefix)
    {
        var shm = "/dev/shm";
        var parent = Directory.Exists(shm) && IsWritable(shm) ? shm : Path.GetTempPath();
        var dir = Path.Combine(parent, prefix + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    private static bool IsWritable(string dir)
    {
        try
        {
            var probe = Path.Combine(dir, ".qfw-probe-" + Guid.NewGuid().ToString("N")[..8]);
            File.WriteAllText(probe, "");
            File.Delete(probe);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>A string with every character outside printable ASCII escaped, for messages.</summary>
    public static string Show(string? s)
    {
        if (s is null) return "(null)";
        var sb = new StringBuilder("\"");
        foreach (var c in s)
            sb.Append(c switch
            {
                '"' => "\\\"",
                '\\' => "\\\\",
                >= ' ' and <= '~' => c.ToString(),
                _ => $"\\u{(int)c:x4}",
            });
        return sb.Append('"').ToString();
    }

    private static uint StableHash(string s)
    {
        var h = 2166136261u;
        foreach (var c in s) h = (h ^ c) * 16777619u;
        return h;
    }
}

/// <summary>Generators shared by the properties: grammar pieces, nasty characters, mutations.</summary>
public static class Gens
{
    /// <summary>Characters a shell, nft, XML or a parser treats specially, and bytes no text should hold.</summary>
    public const string ShellSpecials = "$`;|&<>()'\"\\!*?[]{}~#%^=+,:/@\n\r\t\0 ";

    /// <summary>Any char: mostly ASCII (control characters included), some Latin-1, some anywhere in UTF-16 (lone surrogates included).</summary>
    public static readonly Gen<char> AnyChar = Gen.Frequency(
        (6, Gen.Char['\0', '\x7f']),
        (3, Gen.Char[ShellSpecials]),
        (1, Gen.Char['\x80', '\xff']),
        (1, Gen.Char['\u0100', '\uffff']));

    public static readonly Gen<string> AnyString = Gen.String[AnyChar, 0, 80];

    public static readonly Gen<string> Lower = Gen.String[Gen.Char["abcdefghijklmnopqrstuvwxyz"], 1, 8];

    public static readonly Gen<string> Digits = Gen.Int[0, 70000].Select(i => i.ToString(CultureInfo.InvariantCulture));

    /// <summary>An injection payload: what someone would try to smuggle into a script.</summary>
    public static readonly Gen<string> Payload = Gen.OneOf(
        Gen.Const("$(touch /tmp/qfw-canary)"),
        Gen.Const("`touch /tmp/qfw-canary`"),
        Gen.Const("; touch /tmp/qfw-canary"),
        Gen.Const("| touch /tmp/qfw-canary"),
        Gen.Const("&& touch /tmp/qfw-canary"),
        Gen.Const("\ntouch /tmp/qfw-canary\n"),
        Gen.Const("'; touch /tmp/qfw-canary; '"),
        Gen.Const("\"; touch /tmp/qfw-canary; \""),
        Gen.Const("${IFS}touch${IFS}/tmp/qfw-canary"),
        Gen.Const("\u037e touch /tmp/qfw-canary"), // Greek question mark, looks like ';'
        Gen.Const("\uff04(touch)"), // fullwidth dollar
        Gen.Const("\u202e"), // right-to-left override
        Gen.Const("\0"),
        Gen.Const("../../../etc/passwd"),
        Gen.Const("x\" ; comment \""),
        Gen.String[Gen.Char[ShellSpecials], 1, 6],
        AnyString);

    /// <summary>Inserts, deletes, replaces and duplicates pieces of <paramref name="text"/>: 1 to <paramref name="maxSteps"/> mutations.</summary>
    public static Gen<string> Mutate(Gen<string> valid, int maxSteps = 4, Gen<string>? pieces = null)
    {
        pieces ??= Gen.OneOf(Payload, Gen.String[AnyChar, 1, 3]);
        var step = Gen.Select(Gen.Int[0, 5], Gen.Int[0, int.MaxValue], Gen.Int[0, int.MaxValue], pieces, (kind, a, b, piece) => (kind, a, b, piece));
        return Gen.Select(valid, step.Array[1, maxSteps], (text, steps) =>
        {
            var s = text;
            foreach (var (kind, a, b, piece) in steps)
            {
                var at = s.Length == 0 ? 0 : a % (s.Length + 1);
                switch (kind)
                {
                    case 0: s = s.Insert(at, piece); break; // insert
                    case 1 when s.Length > 0: s = s.Remove(Math.Min(at, s.Length - 1), 1 + b % Math.Max(1, Math.Min(4, s.Length - Math.Min(at, s.Length - 1)))); break; // delete
                    case 2 when s.Length > 0: s = s[..Math.Min(at, s.Length - 1)] + piece + s[Math.Min(s.Length, Math.Min(at, s.Length - 1) + 1)..]; break; // replace
                    case 3 when s.Length > 0: // duplicate a slice
                    {
                        var from = Math.Min(at, s.Length - 1);
                        var len = 1 + b % Math.Max(1, s.Length - from);
                        s = s.Insert(from, s.Substring(from, Math.Min(len, s.Length - from)));
                        break;
                    }
                    case 4: s = s[..at]; break; // truncate
                    default: s = s.Insert(at, piece.ToUpperInvariant()); break;
                }
            }
            return s;
        });
    }
}
