package dev.cardbus.isohost;

import java.io.IOException;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * The bank's card file: PAN, expiry, PAN sequence number, opening balance, PIN verification
 * data (Visa PVV + key index), status and test behaviour flags per card. At rest it is one
 * AES-256-GCM record (the key comes on stdin at start, never from disk); it is read again
 * whenever the file changes, so cards issued while the host runs are known at their first use.
 * Balances, PIN tries and ATCs live in memory (a card's opening balance is used once).
 */
final class CardTable {
    static final String FORMAT = "cardbus-iso-host-cards-v1";

    static final class Card {
        final String pan;
        String expiry = "0000";  // YYMM
        String psn = "00";
        String currency = "156";
        int pvki = 1;
        String pvv = "";
        String status = "active";  // active, lost, stolen, refused
        long delayMs;  // answer this late
        boolean drop;  // drop the connection instead of answering
        String answer = "normal";  // normal, bad-bitmap, short, unknown-stan
        int ignoreReversals;  // leave this many reversals of the card unanswered
        long available;
        int pinTries;
        int lastAtc = -1;

        Card(String pan) {
            this.pan = pan;
        }

        String masked() {
            return pan.substring(0, 6) + "*".repeat(Math.max(0, pan.length() - 10))
                    + pan.substring(pan.length() - 4);
        }
    }

    private final Path path;
    private final byte[] key;
    private final Map<String, Card> cards = new HashMap<>();
    private Object loadedVersion;  // (file key = device + inode, mtime, size) when last read

    CardTable(Path path, byte[] key) {
        this.path = path;
        this.key = key.clone();
    }

    /** The card with this PAN, after re-reading the file if it changed (null: unknown). */
    synchronized Card find(String pan) throws IOException {
        refresh();
        return cards.get(pan);
    }

    synchronized int size() throws IOException {
        refresh();
        return cards.size();
    }

    private void refresh() throws IOException {
        if (!Files.exists(path)) {
            return;
        }
        BasicFileAttributes attrs = Files.readAttributes(path, BasicFileAttributes.class);
        Object version = java.util.List.of(String.valueOf(attrs.fileKey()),
                attrs.lastModifiedTime().toMillis(), attrs.size());
        if (version.equals(loadedVersion)) {
            return;
        }
        Properties outer = new Properties();
        outer.load(new StringReader(Files.readString(path, StandardCharsets.US_ASCII)));
        if (!FORMAT.equals(outer.getProperty("format"))) {
            throw new IOException("card file " + path + " is not " + FORMAT);
        }
        Properties table = new Properties();
        table.load(new StringReader(open(outer.getProperty("nonce"), outer.getProperty("ct"))));
        for (String name : table.stringPropertyNames()) {
            if (!name.endsWith(".expiry")) {
                continue;
            }
            String pan = name.substring(0, name.length() - ".expiry".length());
            Card card = cards.get(pan);
            if (card == null) {
                card = new Card(pan);
                card.available = Long.parseLong(table.getProperty(pan + ".balance", "0"));
                cards.put(pan, card);
            }
            card.expiry = table.getProperty(pan + ".expiry");
            card.psn = table.getProperty(pan + ".psn", "00");
            card.currency = table.getProperty(pan + ".currency", "156");
            card.pvki = Integer.parseInt(table.getProperty(pan + ".pvki", "1"));
            card.pvv = table.getProperty(pan + ".pvv", "");
            card.status = table.getProperty(pan + ".status", "active");
            card.delayMs = Long.parseLong(table.getProperty(pan + ".delay_ms", "0"));
            card.drop = Boolean.parseBoolean(table.getProperty(pan + ".drop", "false"));
            card.answer = table.getProperty(pan + ".answer", "normal");
            card.ignoreReversals = Integer.parseInt(
                    table.getProperty(pan + ".ignore_reversals", "0"));
        }
        loadedVersion = version;
    }

    private String open(String nonceB64, String ctB64) throws IOException {
        try {
            Cipher aead = Cipher.getInstance("AES/GCM/NoPadding");
            aead.init(Cipher.DECRYPT_MODE, new SecretKeySpec(key, "AES"),
                    new GCMParameterSpec(128, Base64.getUrlDecoder().decode(nonceB64)));
            aead.updateAAD(FORMAT.getBytes(StandardCharsets.US_ASCII));
            byte[] clear = aead.doFinal(Base64.getUrlDecoder().decode(ctB64));
            return new String(clear, StandardCharsets.UTF_8);
        } catch (java.security.GeneralSecurityException | IllegalArgumentException e) {
            throw new IOException("card file " + path + " does not open under the host's key");
        }
    }
}
