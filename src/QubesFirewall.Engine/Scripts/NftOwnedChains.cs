using System.Text;

namespace QubesFirewall.Engine.Scripts;

/// <summary>
/// The shell around one idempotent nft transaction over chains the module owns in <c>table ip qubes</c> /
/// <c>ip6 qubes</c> (port forwards, inter-qube links): read each table once with handles, delete the earlier
/// jumps carrying <paramref name="marker"/> as their exact comment in <c>custom-forward</c> and
/// <c>custom-input</c>, then pipe those deletions and the transaction into one <c>nft -f -</c>, so either
/// all of it applies or nothing does. Each writer has its own marker, so one never deletes another's jumps.
/// </summary>
public static class NftOwnedChains
{
    /// <summary>Appends the subshell that runs <paramref name="transaction"/>; <paramref name="what"/> names the rules in messages ("port forward").</summary>
    public static void AppendRun(StringBuilder sb, string qubeName, IReadOnlyList<NftFamily> families, string marker, string transaction, string what)
    {
        sb.Append("(\n");
        foreach (var family in families)
        {
            sb.Append("  ").Append(Variable(family)).Append("=$(nft -a list table ").Append(NftForwardScript.Table(family)).Append(") || { echo ")
              .Append(ShellQuote.Single($"qubesfirewall: cannot read table {NftForwardScript.Table(family)} in {qubeName}; {what}s not changed")).Append(" >&2; exit 1; }\n");
        }
        sb.Append("  {\n");
        foreach (var family in families)
        {
            sb.Append("    printf '%s\\n' \"$").Append(Variable(family)).Append("\" | awk -v t=").Append(ShellQuote.Single(NftForwardScript.Table(family)))
              .Append(" '$1 == \"chain\" { c = $2 } $1 == \"}\" { c = \"\" } (c == \"custom-forward\" || c == \"custom-input\") && / comment \"")
              .Append(marker).Append("\" # handle [0-9]+$/ { print \"delete rule \" t \" \" c \" handle \" $NF }'\n");
        }
        sb.Append("    cat <<'").Append(NftForwardScript.HeredocDelimiter).Append("'\n");
        sb.Append(transaction);
        sb.Append(NftForwardScript.HeredocDelimiter).Append('\n');
        sb.Append("  } | nft -f - || { echo ")
          .Append(ShellQuote.Single($"qubesfirewall: nft refused the {what} rules of {qubeName}; the previous rules are unchanged")).Append(" >&2; exit 1; }\n");
        sb.Append(")\n");
    }

    private static string Variable(NftFamily family) => family == NftFamily.Ip ? "qubesfw_ip" : "qubesfw_ip6";
}
